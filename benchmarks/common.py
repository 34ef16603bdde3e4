"""What every toy-world benchmark does: erase, time it, evaluate base vs edited, record a run."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # optional image backends are never used here

from erasekit import api
from erasekit.core.patch import Patch, stack
from erasekit.registry import get_method
from erasekit.request import EraseRequest, build_config

# All-but-One's setting for the implicit stripes (its lr 2e-4 default is tuned on the shape case):
# every benchmark that erases stripes with abo uses it (docs/methods/abo.md).
ABO_STRIPED = {"lr": 1e-3, "steps": 300}


def erase_timed(model, method: str, request: EraseRequest, config: dict[str, Any], cache_dir: str | None = None,
                timeline=None, timeline_every: int = 0):
    """(patch or per-concept patches, seconds, the config object used). Timeline time is not excluded."""
    cfg = build_config(get_method(method).config_class, config)
    start = time.perf_counter()
    result = api.erase(model, method, request, cfg, cache_dir=cache_dir, callback=timeline,
                       callback_every=timeline_every)
    return result, time.perf_counter() - start, cfg


def small_timeline(model, suite: str, prompts: int = 6, seeds: tuple[int, ...] = (0, 1)):
    """A Timeline on the first prompts of the target and other groups (cheap enough to run every N steps)."""
    from erasekit.core.data import SamplingSettings
    from erasekit.eval.detectors import get_detector
    from erasekit.eval.evaluate import Timeline
    from erasekit.eval.suites import resolve_suite

    full = resolve_suite(suite)
    small = dataclasses.replace(full, groups={g: full.groups[g][:prompts] for g in ("target", "other")
                                              if g in full.groups})
    return Timeline(model, small, get_detector(full.detector), SamplingSettings(seeds=list(seeds)))


def evaluation_run(model, patches: list[Patch], suite: str, seeds: list[int], steps: int, label: dict[str, Any],
                   extra_metrics: dict[str, Any] | None = None, attack_steps: int = 0) -> dict[str, Any]:
    """Evaluate `patches` on `suite` (with a Concept Inversion attack when attack_steps > 0)."""
    result = api.evaluate(model, patches, suite, seeds=seeds, steps=steps, attack_steps=attack_steps)
    metrics = {**result["metrics"], "ssim_window": result["ssim"]["window"], **(extra_metrics or {})}
    return {**label, "model": model.source, "suite": suite, "seeds": seeds, "metrics": metrics,
            "details": result["details"]}


def run_case(model, method: str, request: EraseRequest, config: dict[str, Any], suite: str, seeds: list[int],
             steps: int, label: dict[str, Any] | None = None, timeline_every: int = 0,
             attack_steps: int = 0, save_to: str | None = None) -> dict[str, Any]:
    """Erase with one method and evaluate on one suite (optionally logging a timeline every N steps).

    save_to: also write the (stacked) patch there, for figures drawn from the benchmark's own edits.
    """
    timeline = small_timeline(model, suite) if timeline_every else None
    result, seconds, cfg = erase_timed(model, method, request, config, timeline=timeline,
                                       timeline_every=timeline_every)
    patches = result if isinstance(result, list) else [result]
    trainable = sum(p.info.get("trainable_params", 0) for p in patches) or sum(p.num_values() for p in patches)
    if save_to:
        (stack(patches) if len(patches) > 1 else patches[0]).save(save_to)
    run = evaluation_run(
        model, [stack(patches)] if len(patches) > 1 else patches, suite, seeds, steps,
        {"method": method, "concepts": request.concepts, "anchors": request.anchors,
         "config": dataclasses.asdict(cfg), **(label or {})},
        {"seconds": round(seconds, 1), "trainable_params": trainable}, attack_steps=attack_steps,
    )
    if timeline is not None:
        run["timeline"] = timeline.points
    return run


def parser(description: str):
    """The options every toy-world benchmark takes (seeds, DDIM steps, threads, output directory)."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="toyworld",
                   help="the toy-world pipeline to measure: 'toyworld' (shipped) or a directory trained by "
                   "`erasekit toyworld train`")
    p.add_argument("--seeds", default="0-3", help="evaluation seeds per prompt")
    p.add_argument("--steps", type=int, default=35, help="DDIM steps when evaluating")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results")
    return p


def result_name(benchmark: str, model: str) -> str:
    """'<benchmark>_toyworld', or '<benchmark>_<variant>' for another built-in toy world (e.g. toyworld-wide)."""
    from erasekit.core.model import TOYWORLD_VARIANTS

    return f"{benchmark}_{model if model in TOYWORLD_VARIANTS else 'toyworld'}"


def setup(args) -> tuple[list[int], Any]:
    """Apply the thread count; return the seeds and the loaded toy-world model (--model)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return api.parse_seeds(args.seeds), api.load_model(args.model, device="cpu")
