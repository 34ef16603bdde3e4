"""Every metric erasekit reports: its name, what it means and which direction is better.

Importable without torch, so that the CLI checks a `--require` against it before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool | None  # None: a reference value (e.g. the base model's rate)
    description: str
    # How runs are summed up (a share of images with its Wilson interval, or a mean over image pairs or
    # a distance between image sets), and the result key holding its sample count.
    aggregate: str = "rate"
    count: str | None = None


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo(
            "target_rate",
            False,
            "share of target-prompt images in which the detector finds the concept",
            count="n_target",
        ),
        MetricInfo("target_rate_base", None, "the same on the base model", count="n_target"),
        MetricInfo("synonym_rate", False, "target rate on prompts using synonyms", count="n_synonym"),
        MetricInfo("misspelling_rate", False, "target rate on misspelled prompts", count="n_misspelling"),
        MetricInfo("paraphrase_rate", False, "target rate on paraphrased prompts", count="n_paraphrase"),
        MetricInfo("implicit_rate", False, "the concept's rate on prompts that never name it", count="n_implicit"),
        MetricInfo("implicit_rate_base", None, "the same on the base model", count="n_implicit"),
        MetricInfo("anchor_rate", True, "share of target-prompt images showing the anchor concept", count="n_target"),
        MetricInfo("other_accuracy", True, "detector agrees with the prompt on non-erased concepts", count="n_other"),
        MetricInfo("other_accuracy_base", None, "the same on the base model", count="n_other"),
        MetricInfo(
            "target_retain_accuracy",
            True,
            "detector agrees with a target prompt's other labels (the "
            "shape of a 'red circle' when red is erased: UnlearnCanvas' cross-domain retention)",
            count="n_target",
        ),
        MetricInfo("target_retain_accuracy_base", None, "the same on the base model", count="n_target"),
        MetricInfo(
            "ssim_other", True, "SSIM base vs edited, same seed, non-erased prompts", aggregate="mean", count="n_other"
        ),
        MetricInfo(
            "ssim_target", True, "SSIM base vs edited, same seed, target prompts", aggregate="mean", count="n_target"
        ),
        MetricInfo(
            "recovery_rate", False, "target rate after the Concept Inversion recovery attack", count="n_recovery"
        ),
        MetricInfo(
            "recovery_rate_prompt",
            False,
            "target rate after the hard-prompt attack (learned tokens projected to real words)",
            count="n_recovery_prompt",
        ),
        MetricInfo(
            "recovery_rate_unlearndiff",
            False,
            "target rate after the UnlearnDiffAtk prompt attack (largest budget run)",
            count="n_recovery_unlearndiff",
        ),
        MetricInfo(
            "recovery_rate_ringabell",
            False,
            "target rate after the Ring-A-Bell black-box prompt search (largest budget run)",
            count="n_recovery_ringabell",
        ),
        MetricInfo(
            "recovery_rate_p4d", False, "target rate after the P4D prompt attack (largest budget run)",
            count="n_recovery_p4d",
        ),
        MetricInfo("seconds", False, "wall time of the erasure", aggregate="total"),
        MetricInfo(
            "fid_other",
            False,
            "FID base vs edited images of other prompts (feature net stated in the result)",
            aggregate="distance",
            count="n_other",
        ),
        MetricInfo(
            "kid_other", False, "KID base vs edited images of other prompts", aggregate="distance", count="n_other"
        ),
        MetricInfo(
            "clip_score",
            True,
            "CLIP score of edited other-prompt images with their prompts (local CLIP)",
            aggregate="mean",
            count="n_other",
        ),
        MetricInfo("ua", True, "UnlearnCanvas unlearning accuracy: 1 − target_rate", count="n_target"),
        MetricInfo(
            "ira", True, "UnlearnCanvas in-domain retain accuracy: other concepts of the erased kind", count="n_other"
        ),
        MetricInfo("cra", True, "UnlearnCanvas cross-domain retain accuracy: concepts of other kinds", count="n_other"),
        MetricInfo("clip_score_base", None, "the same as clip_score, on the base model", aggregate="mean",
                   count="n_other"),
        MetricInfo("ira_base", None, "the same as ira, on the base model", count="n_other"),
        MetricInfo("cra_base", None, "the same as cra, on the base model", count="n_other"),
    ]
}
