"""Evaluate a base model against the same model with patches: same prompts, same seeds.

Base images are cached on disk, keyed by the base weights' fingerprint, the prompts,
seeds and sampler settings, so that comparing many patches samples the base once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from erasekit.core import patch as patching
from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import named_parameters
from erasekit.eval.detectors import Detector
from erasekit.eval.metrics import ssim_per_image, ssim_window, wilson_interval
from erasekit.eval.suites import Suite

log = logging.getLogger(__name__)

RATE_GROUPS = ("target", "synonym", "misspelling", "paraphrase", "implicit")


@dataclass
class SamplingSettings:
    seeds: list[int]
    steps: int = 35
    guidance: float = 7.5
    batch_size: int = 64


def model_fingerprint(model: DiffusionModel) -> str:
    """Fingerprint of the model's base weights (patches applied to it do not count)."""
    params = named_parameters(model.named_modules())
    return patching.fingerprint(patching.base_tensors(model, params))


class ImageCache:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def key(self, fingerprint: str, prompts: Sequence[str], settings: SamplingSettings) -> str:
        # Batch size is left out: batching does not change an image.
        payload = json.dumps({"model": fingerprint, "prompts": list(prompts), "seeds": settings.seeds,
                              "steps": settings.steps, "guidance": settings.guidance}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def get(self, key: str) -> torch.Tensor | None:
        path = self.directory / f"{key}.safetensors"
        return load_file(str(path))["images"] if path.exists() else None

    def put(self, key: str, images: torch.Tensor) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        save_file({"images": images.contiguous()}, str(tmp))
        os.replace(tmp, path)


def _generate(model, prompts: Sequence[str], settings: SamplingSettings, progress: bool) -> torch.Tensor:
    pairs = [(p, s) for p in prompts for s in settings.seeds]
    return generate_images(model, [p for p, _ in pairs], [s for _, s in pairs], steps=settings.steps,
                           guidance=settings.guidance, batch_size=settings.batch_size, progress=progress)


def _rate(hits: np.ndarray) -> dict[str, Any]:
    k, n = int(hits.sum()), int(hits.size)
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else float("nan"), "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def evaluate(
    model: DiffusionModel,
    patches: Sequence[patching.Patch],
    suite: Suite,
    detector: Detector,
    settings: SamplingSettings,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics (BENCHMARKS.md names) for base vs patched, plus the images of both sides."""
    start = time.perf_counter()
    cache = ImageCache(cache_dir) if cache_dir else None
    fingerprint = model_fingerprint(model) if cache else ""
    groups = {g: [p.prompt for p in ps] for g, ps in suite.groups.items()}

    base: dict[str, torch.Tensor] = {}
    for group, prompts in groups.items():
        key = cache.key(fingerprint, prompts, settings) if cache else None
        images = cache.get(key) if cache else None
        if images is None:
            images = _generate(model, prompts, settings, progress)
            if cache:
                cache.put(key, images)
        base[group] = images
    seconds_base = time.perf_counter() - start

    for p in patches:
        patching.apply(model, p)
    try:
        edited = {group: _generate(model, prompts, settings, progress) for group, prompts in groups.items()}
    finally:
        for p in reversed(list(patches)):
            patching.remove(model, p)
    seconds_edited = time.perf_counter() - start - seconds_base

    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    attr, value = suite.concept.attribute, suite.concept.value
    for side, images in (("", edited), ("_base", base)):
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
        if "other" in found:
            hits = _label_agreement(suite, found["other"], len(settings.seeds))
            r = _rate(hits)
            metrics[f"other_accuracy{side}"] = r["value"]
            details[f"other_accuracy{side}"] = r
    window = ssim_window(model.image_size)
    for group, key in (("other", "ssim_other"), ("target", "ssim_target")):
        if group in edited:
            metrics[key] = float(ssim_per_image(base[group], edited[group], window).mean())
    for group, images in edited.items():
        metrics[f"n_{group}"] = len(images)
    return {
        "metrics": metrics,
        "details": details,
        "ssim": {"window": window, "kernel": "uniform", "data_range": 1.0},
        "suite": {"name": suite.name, "version": suite.version, "detector": suite.detector},
        "sampling": asdict(settings),
        "timing": {"seconds_base": round(seconds_base, 2), "seconds_edited": round(seconds_edited, 2)},
        "images": {"base": base, "edited": edited},
    }


def _label_agreement(suite: Suite, found: dict[str, np.ndarray], per_prompt: int) -> np.ndarray:
    """One hit per (image, labelled attribute): does the detector agree with the prompt?"""
    hits = []
    for i, prompt in enumerate(suite.groups["other"]):
        for j in range(per_prompt):
            idx = i * per_prompt + j
            hits.extend(found[a][idx] == v for a, v in prompt.labels.items())
    return np.asarray(hits, dtype=bool)
