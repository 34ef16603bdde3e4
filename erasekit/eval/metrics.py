"""Metrics that compare images or count detections, each declaring which direction is better."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool | None  # None: a reference value (e.g. the base model's rate)
    description: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("target_rate", False, "share of target-prompt images in which the detector finds the concept"),
        MetricInfo("target_rate_base", None, "the same on the base model"),
        MetricInfo("synonym_rate", False, "target rate on prompts using synonyms"),
        MetricInfo("misspelling_rate", False, "target rate on misspelled prompts"),
        MetricInfo("paraphrase_rate", False, "target rate on paraphrased prompts"),
        MetricInfo("implicit_rate", False, "the concept's rate on prompts that never name it"),
        MetricInfo("implicit_rate_base", None, "the same on the base model"),
        MetricInfo("anchor_rate", True, "share of target-prompt images showing the anchor concept"),
        MetricInfo("other_accuracy", True, "detector agrees with the prompt on non-erased concepts"),
        MetricInfo("other_accuracy_base", None, "the same on the base model"),
        MetricInfo("target_retain_accuracy", True, "detector agrees with a target prompt's other labels (the "
                   "shape of a 'red circle' when red is erased: UnlearnCanvas' cross-domain retention)"),
        MetricInfo("target_retain_accuracy_base", None, "the same on the base model"),
        MetricInfo("ssim_other", True, "SSIM base vs edited, same seed, non-erased prompts"),
        MetricInfo("ssim_target", True, "SSIM base vs edited, same seed, target prompts"),
        MetricInfo("recovery_rate", False, "target rate after the Concept Inversion recovery attack"),
        MetricInfo("recovery_rate_prompt", False, "target rate after the hard-prompt (UnlearnDiffAtk-style) attack"),
        MetricInfo("seconds", False, "wall time of the erasure"),
        MetricInfo("fid_other", False, "FID base vs edited images of other prompts (feature net stated in the result)"),
        MetricInfo("kid_other", False, "KID base vs edited images of other prompts"),
        MetricInfo("clip_score", True, "CLIP score of edited other-prompt images with their prompts (local CLIP)"),
        MetricInfo("ua", True, "UnlearnCanvas unlearning accuracy: 1 − target_rate"),
        MetricInfo("ira", True, "UnlearnCanvas in-domain retain accuracy: other concepts of the erased kind"),
        MetricInfo("cra", True, "UnlearnCanvas cross-domain retain accuracy: concepts of other kinds"),
    ]
}


def ssim_window(image_size: int) -> int:
    """All-but-One's 25×25 window at SD resolution (≥ 256 px); 7×7 on small (toy) images."""
    return 25 if image_size >= 256 else 7


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """SSIM of each pair (N, 3, H, W) in [0, 1], uniform window (as in All-but-One's Table 1 setting)."""
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    window = window or ssim_window(a.shape[-1])
    return structural_similarity_index_measure(
        a.float(), b.float(), gaussian_kernel=False, kernel_size=window, data_range=1.0, reduction="none"
    )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class _Features(torch.nn.Module):
    """Adapts a feature function to the nn.Module torchmetrics' FID/KID accept."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images.float())


def feature_distances(
    real: torch.Tensor, fake: torch.Tensor, feature_fn, image_size: int, subset_size: int = 50
) -> dict[str, float]:
    """FID and KID between two image sets (N, 3, H, W) in [0, 1] with a given feature function.

    Scores from a substitute feature network are comparable only among runs using the same one.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    net = _Features(feature_fn)
    size = (3, image_size, image_size)
    fid = FrechetInceptionDistance(feature=net, normalize=True, input_img_size=size)
    kid = KernelInceptionDistance(feature=net, normalize=True, subset_size=min(subset_size, len(real), len(fake)))
    with torch.no_grad():
        for metric in (fid, kid):
            metric.update(real, real=True)
            metric.update(fake, real=False)
        kid_mean, _ = kid.compute()
        return {"fid": float(fid.compute()), "kid": float(kid_mean)}
