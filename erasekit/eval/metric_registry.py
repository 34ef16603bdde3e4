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
