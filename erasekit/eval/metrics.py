"""Metrics that compare images or count detections (their names and directions: metric_registry)."""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


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
