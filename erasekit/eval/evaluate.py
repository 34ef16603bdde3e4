"""Evaluate a base model against the same model with patches: same prompts, same seeds.

Base images are cached on disk, keyed by the base weights' fingerprint, the prompts,
seeds and sampler settings, so that comparing many patches samples the base once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from erasekit.core import patch as patching
from erasekit.core.data import SamplingSettings, cached_images
from erasekit.core.model import DiffusionModel
from erasekit.eval.attack_names import ATTACKS, count_key
from erasekit.eval.attacks.base import Attack, AttackInputs
from erasekit.eval.detectors import Detector
from erasekit.eval.metrics import feature_distances, ssim_per_image, ssim_window, wilson_interval
from erasekit.eval.suites import Prompt, Suite

log = logging.getLogger(__name__)

RATE_GROUPS = ("target", "synonym", "misspelling", "paraphrase", "implicit")
MIN_DISTRIBUTION_IMAGES = 20  # below this FID/KID estimates are meaningless


def image_owners(prompts: Sequence[Prompt], settings: SamplingSettings) -> list[tuple[int, int, float]]:
    """(prompt index, seed, guidance) of every image: the run's seeds, or a prompt's own seed and CFG."""
    return [(i, seed, p.guidance if p.guidance is not None else settings.guidance)
            for i, p in enumerate(prompts) for seed in ([p.seed] if p.seed is not None else settings.seeds)]


def _generate(model, prompts: Sequence[Prompt], settings: SamplingSettings, progress: bool,
              cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Every image of `image_owners`, in that order, through the cache when one is given."""
    owners = image_owners(prompts, settings)
    images: list[torch.Tensor | None] = [None] * len(owners)
    for guidance in sorted({g for _, _, g in owners}):
        idx = [k for k, (_, _, g) in enumerate(owners) if g == guidance]
        part = dataclasses.replace(settings, seeds=[owners[k][1] for k in idx], guidance=guidance)
        generated = cached_images(model, [prompts[owners[k][0]].prompt for k in idx], part, cache_dir, progress)
        for k, image in zip(idx, generated, strict=True):
            images[k] = image
    return torch.stack(images)


def _rate(hits: np.ndarray) -> dict[str, Any]:
    k, n = int(hits.sum()), int(hits.size)
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else float("nan"), "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def sample_suite(model: DiffusionModel, suite: Suite, settings: SamplingSettings, progress: bool = True,
                 cache_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The model's images for every group of the suite (as it is now: live weights, applied patches)."""
    return {group: _generate(model, prompts, settings, progress, cache_dir) for group, prompts in suite.groups.items()}


def score(
    suite: Suite,
    detector: Detector,
    settings: SamplingSettings,
    base: dict[str, torch.Tensor],
    edited: dict[str, torch.Tensor],
    image_size: int,
    with_base: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, details) comparing edited images with base images of the same prompts and seeds."""
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    attr, value = suite.concept.attribute, suite.concept.value
    sides = (("", edited), ("_base", base)) if with_base else (("", edited),)
    for side, images in sides:
        found = {g: detector.detect(imgs) for g, imgs in images.items()}
        for group in RATE_GROUPS:
            if group in found:
                r = _rate(found[group][attr] == value)
                metrics[f"{group}_rate{side}"] = r["value"]
                details[f"{group}_rate{side}"] = r
        if suite.anchor is not None:
            r = _rate(found["target"][suite.anchor.attribute] == suite.anchor.value)
            metrics[f"anchor_rate{side}"] = r["value"]
            details[f"anchor_rate{side}"] = r
        target_hits, target_kind = _label_agreement(suite.groups["target"], found["target"], settings, attr)
        if (~target_kind).any():  # the rest of what a target prompt names (the circle drawn in the erased red)
            r = _rate(target_hits[~target_kind])
            metrics[f"target_retain_accuracy{side}"] = r["value"]
            details[f"target_retain_accuracy{side}"] = r
        if "other" in found:
            hits, same_kind = _label_agreement(suite.groups["other"], found["other"], settings, attr)
            r = _rate(hits)
            metrics[f"other_accuracy{side}"] = r["value"]
            details[f"other_accuracy{side}"] = r
            # UnlearnCanvas: accuracy on other concepts of the erased kind (IRA) and of other kinds (CRA).
            for key, mask in (("ira", same_kind), ("cra", ~same_kind)):
                if mask.any():
                    metrics[f"{key}{side}"] = float(hits[mask].mean())
    if "target_rate" in metrics:
        metrics["ua"] = 1.0 - metrics["target_rate"]
    window = ssim_window(image_size)
    for group, key in (("other", "ssim_other"), ("target", "ssim_target")):
        if group in edited:
            metrics[key] = float(ssim_per_image(base[group], edited[group], window).mean())
    features = getattr(detector, "features", None)
    if features is not None and "other" in edited and len(edited["other"]) < MIN_DISTRIBUTION_IMAGES:
        details["fid_other"] = f"skipped: fewer than {MIN_DISTRIBUTION_IMAGES} images"
    elif features is not None and "other" in edited:
        distances = feature_distances(base["other"], edited["other"], features, image_size)
        metrics["fid_other"], metrics["kid_other"] = distances["fid"], distances["kid"]
        details["feature_network"] = getattr(detector, "feature_network", type(detector).__name__)
    for group, images in edited.items():
        metrics[f"n_{group}"] = len(images)
    return metrics, details


def evaluate(
    model: DiffusionModel,
    patches: Sequence[patching.Patch],
    suite: Suite,
    detector: Detector,
    settings: SamplingSettings,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    attacks: Sequence[Attack] = (),
    attack_budgets: Sequence[int] = (),
    attack_prompts: int = 8,
    clip_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Metrics (BENCHMARKS.md names) for base vs patched, plus the images of both sides.

    attacks: run each against the patched model on the first `attack_prompts` target prompts at every
    budget of `attack_budgets`; its rate (e.g. `recovery_rate`) is the one at the largest budget, the
    whole curve goes to details. clip_path: a local CLIP for `clip_score` on the other prompts.
    """
    start = time.perf_counter()
    base = sample_suite(model, suite, settings, progress, cache_dir)
    seconds_base = time.perf_counter() - start
    with patching.applied_temporarily(model, patches):
        edited = sample_suite(model, suite, settings, progress)
    seconds_edited = time.perf_counter() - start - seconds_base
    metrics, details = score(suite, detector, settings, base, edited, model.image_size)
    details["detector"] = detector.settings()
    if clip_path is not None and "other" in edited:
        from erasekit.eval.clip import clip_score

        owners = image_owners(suite.groups["other"], settings)
        texts = [suite.groups["other"][i].prompt for i, _, _ in owners]
        metrics["clip_score"] = clip_score(edited["other"], texts, clip_path)
        metrics["clip_score_base"] = clip_score(base["other"], texts, clip_path)
    attacked = {}
    if attacks and attack_budgets and patches:
        prompts = [p.prompt for p in suite.groups["target"][:attack_prompts]]
        inputs = AttackInputs(model, patches, suite.concept.value, prompts, settings, cache_dir, progress)
        for attack in attacks:
            key, curve, attacked[attack.name] = attack_rates(inputs, attack, attack_budgets, detector, suite)
            metrics[key], metrics[count_key(key)] = curve[-1]["value"], curve[-1]["n"]
            last = {k: curve[-1][k] for k in ("value", "n", "ci95")}  # the rate's interval, as other rates have
            settings_used = {**asdict(attack), attack.budget_field: curve[-1]["budget"]}
            rising = still_rising(curve)
            details[key] = {**last, "attack": attack.name, "settings": settings_used,
                            "budget_field": attack.budget_field, "prompts": len(inputs.prompts), "curve": curve,
                            "still_rising": rising}
            if rising:
                log.warning("%s: the rate still rises at the largest budget (%s %d: %.3f, above %s %d's "
                            "interval): the concept comes back more with more budget; try a larger one",
                            attack.name, attack.budget_field, curve[-1]["budget"], curve[-1]["value"],
                            attack.budget_field, curve[-2]["budget"])
    return {
        "metrics": metrics,
        "details": details,
        "ssim": {"window": ssim_window(model.image_size), "kernel": "uniform", "data_range": 1.0},
        "suite": {"name": suite.name, "version": suite.version, "detector": suite.detector},
        "sampling": asdict(settings),
        "timing": {"seconds_base": round(seconds_base, 2), "seconds_edited": round(seconds_edited, 2)},
        "images": {"base": base, "edited": edited, "attacks": attacked},
    }


def still_rising(curve: Sequence[dict[str, Any]]) -> bool:
    """Whether an attack's budget curve had not stopped rising: its rate at the largest budget lies above
    the 95 % interval of its rate at the budget before (a single budget says nothing: False)."""
    return len(curve) > 1 and curve[-1]["value"] > curve[-2]["ci95"][1]


def attack_rates(inputs: AttackInputs, attack: Attack, budgets: Sequence[int], detector: Detector, suite: Suite
                 ) -> tuple[str, list[dict[str, Any]], torch.Tensor]:
    """(the attack's metric, its rate at each budget with interval, texts and seconds per attacked prompt,
    the images at the largest budget)."""
    curve = []
    outcomes = attack.run(inputs, budgets)
    for outcome in outcomes:
        r = _rate(detector.detect(outcome.images)[suite.concept.attribute] == suite.concept.value)
        curve.append({"budget": outcome.budget, **r, "seconds": round(outcome.seconds, 2),
                      "seconds_per_prompt": round(outcome.seconds / len(inputs.prompts), 3),
                      "texts": outcome.texts[:4]})
    return ATTACKS[attack.name].metric, curve, outcomes[-1].images


class Timeline:
    """A training callback: every N steps, score the live (being trained) weights against base images
    sampled before training began — the erasure timeline of All-but-One's Fig. 4."""

    def __init__(self, model: DiffusionModel, suite: Suite, detector: Detector, settings: SamplingSettings,
                 keys: Sequence[str] = ("target_rate", "ssim_other")) -> None:
        self.model, self.suite, self.detector, self.settings, self.keys = model, suite, detector, settings, keys
        self.base = sample_suite(model, suite, settings, progress=False)
        self.points: list[dict[str, Any]] = []

    def __call__(self, step: int, trainer=None) -> bool:
        edited = sample_suite(self.model, self.suite, self.settings, progress=False)
        metrics, _ = score(self.suite, self.detector, self.settings, self.base, edited, self.model.image_size,
                           with_base=False)
        self.points.append({"step": step, **{k: metrics[k] for k in self.keys if k in metrics}})
        return False


def _label_agreement(prompts: Sequence[Prompt], found: dict[str, np.ndarray], settings: SamplingSettings,
                     erased_attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """One hit per (image, labelled attribute): does the detector agree with the prompt? Also whether
    each label is of the erased concept's kind (e.g. another shape when a shape is erased)."""
    hits, same_kind = [], []
    for k, (i, _, _) in enumerate(image_owners(prompts, settings)):
        for attribute, value in prompts[i].labels.items():
            hits.append(found[attribute][k] == value)
            same_kind.append(attribute == erased_attribute)
    return np.asarray(hits, dtype=bool), np.asarray(same_kind, dtype=bool)
