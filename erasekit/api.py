"""The Python face of erasekit; the CLI is a thin shell over these functions."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from erasekit.core import files
from erasekit.core import patch as patching
from erasekit.core.edit import RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images
from erasekit.defaults import ResolvedConfig, resolve_config
from erasekit.errors import ErasekitError
from erasekit.registry import get_method
from erasekit.request import EraseRequest

log = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_device(name: str) -> str:
    """`name` when this machine has that device; one ErasekitError line when it does not."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ErasekitError(f"{name!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    counts = {"cuda": torch.cuda.device_count,
              "mps": lambda: int(torch.backends.mps.is_available()),
              "xpu": lambda: torch.xpu.device_count() if hasattr(torch, "xpu") else 0}
    if device.type in counts and (device.index or 0) >= counts[device.type]():
        raise ErasekitError(f"device {name!r} is not available on this machine ({counts[device.type]()} {device.type} "
                            "device(s)); use --device cpu")
    return name


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model(
    source: str | os.PathLike,
    patches: Sequence[str | os.PathLike | patching.Patch] = (),
    device: str | None = None,
    config: str | os.PathLike | None = None,
    dtype: str = "fp32",
) -> DiffusionModel:
    """Load a model (directory, hub id, single file or 'toyworld') and apply patches to it.

    dtype: the frozen weights' precision, fp32 | bf16 | fp16 (trained tensors keep float32 master
    copies during an erase; a VAE with `force_upcast` stays float32).
    """
    if dtype not in DTYPES:
        raise ErasekitError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = available_device(device or default_device())  # before any weights load
    model = DiffusionModel.load(source, device=device, config=config, torch_dtype=DTYPES[dtype])
    for p in patches:
        patching.apply(model, p if isinstance(p, patching.Patch) else patching.Patch.load(p))
    return model


def apply(pipe, patch: patching.Patch | str | os.PathLike, scale: float = 1.0) -> None:
    """Apply an erasekit patch to your own in-memory diffusers pipeline (fingerprint-checked, as for
    models erasekit loads); `erasekit.remove(pipe, patch)` restores the base weights bit for bit."""
    from erasekit.core.model import PipelineView

    patching.apply(PipelineView(pipe), patch if isinstance(patch, patching.Patch) else patching.Patch.load(patch),
                   scale)


def remove(pipe, patch: patching.Patch | str | os.PathLike) -> None:
    """Take a patch applied with `erasekit.apply` off your pipeline."""
    from erasekit.core.model import PipelineView

    patching.remove(PipelineView(pipe), patch if isinstance(patch, patching.Patch) else patching.Patch.load(patch))


def parse_seeds(spec: str | Sequence[int]) -> list[int]:
    """Seeds from '0-7', '1,5,9', a mix ('0-3,10') or a list of ints (all >= 0)."""
    if not isinstance(spec, str):
        return [int(s) for s in spec]
    seeds: list[int] = []
    for part in spec.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ErasekitError(f"bad seed spec {spec!r}: use e.g. '0-7', '1,5,9' or '0-3,10'")
        seeds.extend(range(int(match[1]), int(match[2] or match[1]) + 1))
    return seeds


def generate(
    model: DiffusionModel,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str = "",
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Every prompt with every seed. Returns images (N, 3, H, W) in [0, 1] and their (prompt, seed)."""
    if not prompts:
        raise ErasekitError("give at least one prompt")
    if steps < 1:
        raise ErasekitError(f"steps must be >= 1, got {steps}")
    if not np.isfinite(guidance):
        raise ErasekitError(f"guidance must be a finite number, got {guidance}")
    pairs = [(p, s) for p in prompts for s in seeds]
    images = generate_images(
        model,
        [p for p, _ in pairs],
        [s for _, s in pairs],
        steps=steps,
        guidance=guidance,
        negative_prompt=negative_prompt,
        batch_size=batch_size,
        progress=progress,
    )
    return images, pairs


def to_pil(image: torch.Tensor) -> Image.Image:
    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


MIN_TILE = 128  # pixels: a 32 px toy-world image is drawn 4× larger, nearest-neighbour, to be seen


def image_grid(images: torch.Tensor, columns: int, pad: int = 2) -> Image.Image:
    """Tile images (N, 3, H, W) into one picture, `columns` per row, white gaps between; images smaller
    than MIN_TILE are enlarged by a whole factor, nearest-neighbour (pixels stay pixels)."""
    factor = -(-MIN_TILE // images.shape[-1])
    if factor > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
    n, _, h, w = images.shape
    rows = (n + columns - 1) // columns
    canvas = torch.ones(3, rows * (h + pad) + pad, columns * (w + pad) + pad)
    for i in range(n):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[:, y : y + h, x : x + w] = images[i]
    return to_pil(canvas)


def save_images(
    images: torch.Tensor, pairs: Sequence[tuple[str, int]], out_dir: str | os.PathLike, columns: int,
    info: dict | None = None,
) -> Path:
    """Per-image PNGs, grid.png (one row per prompt) and images.json describing them."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (image, (prompt, seed)) in enumerate(zip(images, pairs, strict=True)):
        name = f"images/{i:04d}_seed{seed}.png"
        to_pil(image).save(out / name)
        records.append({"file": name, "prompt": prompt, "seed": seed})
    image_grid(images, columns=columns).save(out / "grid.png")
    (out / "images.json").write_text(json.dumps({"images": records, **(info or {})}, indent=2))
    return out


def erase(
    model: DiffusionModel,
    method: str,
    request: EraseRequest,
    config: Mapping[str, Any] | ResolvedConfig | Any | None = None,
    overrides: Mapping[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    callback=None,
    callback_every: int = 0,
    gradient_checkpointing: bool = False,
) -> patching.Patch | list[patching.Patch]:
    """Run an erasure method on a loaded model; the model itself is left as it was.

    config: the request's values (a mapping, layered over the paper's and the model's defaults, see
    erasekit.defaults), a config resolved by `resolve_config`, or a config object taken as it is.
    overrides: values over everything else (the CLI's `--set`).
    Returns a Patch, or one Patch per concept for methods registered with multi_patch (sepme); each
    records the final config and, in info["config_sources"], the layer of every value.

    checkpoint_dir: where training checkpoints go; a killed run started again with the same
    directory resumes and ends with the same patch.
    cache_dir: where images a method draws from the base model are cached (None: not cached).
    callback: called as callback(step, trainer) every `callback_every` training steps, with the model
    holding the weights being trained (e.g. an erasekit.eval.evaluate.Timeline).
    gradient_checkpointing: recompute activations in backward (less memory, ~30 % more time; SDXL on a
    24 GB GPU needs it with bf16).
    """
    spec = get_method(method)
    spec.check_family(model.family)
    if isinstance(config, ResolvedConfig):
        resolved = config
    elif isinstance(config, spec.config_class):
        resolved = ResolvedConfig(config, {f.name: "given" for f in dataclasses.fields(config)})
    else:
        resolved = resolve_config(method, model.profile, request, config, overrides, family=model.family.name)
    spec.check_family(model.family, resolved.config)
    spec.check_request(request, resolved.config)
    request.check_vocabulary(model.tokenizer)
    run = RunOptions(checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None, progress=progress,
                     cache_dir=Path(cache_dir) if cache_dir else None, callback=callback,
                     callback_every=callback_every, gradient_checkpointing=gradient_checkpointing)
    parallel = _check_the_batch_splits(resolved.config)
    result = spec.erase(model, request, resolved.config, run)
    for p in result if isinstance(result, list) else [result]:
        p.info["config_sources"] = dict(resolved.sources)
        if parallel:
            p.info["data_parallel"] = parallel
    return result


def _check_the_batch_splits(config: Any) -> dict[str, int] | None:
    """Under `accelerate launch --num_processes N`: each process trains on its share of the batch every
    process draws alike (erasekit.core.distributed.share), so batch_size must split over N; a method
    without a batch_size repeats its one example on every process (no faster, the same result)."""
    from erasekit.core.distributed import processes

    n = processes().num_processes
    if n == 1:
        return None
    batch = getattr(config, "batch_size", None)
    if batch is not None and callable(getattr(config, "pooled", None)) and not config.pooled():
        batch = None  # a fresh trajectory of the model being trained each step: one example
    if batch is None:
        log.warning("this method draws one example a step: %d processes repeat it (same patch, no speed-up)", n)
    elif batch % n:
        raise ErasekitError(f"batch_size {batch} does not split over {n} processes; use a multiple of {n}")
    return {"processes": n, "examples_per_step": batch or 1}


def change_summary(model: DiffusionModel, patches: Sequence[patching.Patch]) -> dict[str, Any]:
    """What the patches touch: tensors, values, and the relative weight change ‖Δ‖ / ‖W_base‖ over them."""
    deltas = patching.stack(patches).deltas
    base = patching.base_tensors(model, deltas)
    change = sum(float(d.float().pow(2).sum()) for d in deltas.values()) ** 0.5
    norm = sum(float(base[n].float().pow(2).sum()) for n in deltas) ** 0.5
    return {"tensors": len(deltas), "values": sum(d.numel() for d in deltas.values()),
            "relative_change": change / norm if norm else float("inf")}


# Seeds no benchmark evaluates or calibrates on: the check sees images nobody tuned on.
CHECK_SEEDS = (1000, 1001, 1002)


def check_erasure(model: DiffusionModel, patches: Sequence[patching.Patch], concept: str, prompts: int = 8,
                  seeds: Sequence[int] = CHECK_SEEDS, steps: int = 35, progress: bool = False) -> dict[str, Any]:
    """Draw a few target prompts of `concept` with the base and the patched model on fresh seeds and
    count the concept with the model profile's detector: the rates with their 95 % intervals, and
    whether the edited rate is within noise of the base's (the intervals overlap: nothing erased)."""
    from erasekit.core.data import SamplingSettings
    from erasekit.defaults import check_suite
    from erasekit.eval.detectors import get_detector
    from erasekit.eval.evaluate import sample_suite
    from erasekit.eval.metrics import wilson_interval
    from erasekit.eval.suites import resolve_suite

    spec = check_suite(model.profile, concept)
    if spec is None:
        raise ErasekitError(f"no detector measures {concept!r} on this model (the check runs on the toy worlds); "
                            "use --no-check and `erasekit eval` with a suite")
    suite = resolve_suite(spec)
    target = suite.groups["target"]
    chosen = target[:: max(1, len(target) // prompts)][:prompts]
    small = dataclasses.replace(suite, groups={"target": chosen})
    settings = SamplingSettings(seeds=list(seeds), steps=steps)
    detector = get_detector(suite.detector)
    base = sample_suite(model, small, settings, progress)["target"]
    with patching.applied_temporarily(model, patches):
        edited = sample_suite(model, small, settings, progress)["target"]
    out: dict[str, Any] = {"concept": concept, "suite": spec, "seeds": list(seeds), "prompts": len(chosen)}
    for side, images in (("base", base), ("edited", edited)):
        hits = detector.detect(images)[suite.concept.attribute] == suite.concept.value
        k, n = int(hits.sum()), int(hits.size)
        out[side] = {"rate": k / n, "n": n, "ci95": [round(v, 4) for v in wilson_interval(k, n)]}
    out["within_noise"] = out["edited"]["ci95"][1] >= out["base"]["ci95"][0]
    return out


def save_patches(result: patching.Patch | list[patching.Patch], out: str | os.PathLike) -> list[Path]:
    """A patch to its .safetensors file; per-concept patches into a directory, plus their stack."""
    if isinstance(result, patching.Patch):
        return [result.save(out)]
    out = Path(out)
    written = [p.save(out / f"{re.sub(r'[^A-Za-z0-9_-]+', '_', p.concepts[0])}.safetensors") for p in result]
    written.append(patching.stack(result).save(out / "combined.safetensors"))
    return written


def load_images(paths: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """RGB images from files, resized to size×size, as (N, 3, size, size) in [0, 1]."""
    out = []
    for path in paths:
        try:
            image = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            raise ErasekitError(f"cannot read image {path}: {exc}") from exc
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(out)


@torch.no_grad()
def purify(
    model: DiffusionModel,
    images: torch.Tensor,
    prompt: str = "",
    steps: int = 35,
    guidance: float = 1.0,
    batch_size: int = 16,
    invert_with: str = "edited",
    strength: float = 1.0,
    noise: str = "inversion",
    seed: int = 0,
) -> torch.Tensor:
    """Concept purification (All-but-One §5): DDIM-invert real images conditioned on `prompt`
    (∅ by default) and regenerate them from the inverted noise with the (edited) model.

    invert_with: 'edited' inverts with the model as loaded; 'base' inverts with its UNet's weights
    before any patch, so that only the regeneration sees the erasure.
    strength: the share of the DDIM steps inverted (1: all the way to x_T); lower keeps more of
    the input and leaves the edited model fewer steps to change it.
    noise: 'inversion' reaches that timestep by DDIM inversion (deterministic: what the latent
    holds survives); 'random' by the forward process q(x_t | x_0) with seeded Gaussian noise
    (SDEdit), which drowns fine detail and leaves the edited model to redraw it.
    """
    from erasekit.core.noising import add_noise
    from erasekit.core.sampler import make_sampler

    if invert_with not in ("edited", "base"):
        raise ErasekitError(f"invert_with must be 'edited' or 'base', got {invert_with!r}")
    if not 0 < strength <= 1:
        raise ErasekitError(f"strength must lie in (0, 1], got {strength}")
    if noise not in ("inversion", "random"):
        raise ErasekitError(f"noise must be 'inversion' or 'random', got {noise!r}")
    depth = max(1, round(strength * steps))
    inverter = make_sampler(model, steps, 1.0, weights=_base_denoiser_weights(model) if invert_with == "base" else None)
    sampler = make_sampler(model, steps, guidance)
    cond_one, uncond_one = model.encode([prompt])[0], model.encode([""])[0]
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        cond = cond_one.expand(len(batch), *cond_one.shape)
        latents = model.encode_images(batch)
        if noise == "inversion":
            x_t = inverter.invert(latents, cond, stop_at=depth).latents
        else:
            t = sampler.timesteps()[steps - depth]
            eps = model.seeded_noise(range(seed + start, seed + start + len(batch)), latents.shape[1:])
            x_t = add_noise(model.scheduler, latents, eps.to(latents.dtype), t)
        regenerated = sampler.sample(x_t, cond, uncond_one.expand_as(cond), start_at=steps - depth).latents
        out.append(model.decode(regenerated).cpu())
    return torch.cat(out)


def _base_denoiser_weights(model: DiffusionModel) -> dict[str, torch.Tensor] | None:
    """The denoiser tensors the applied patches changed, at their unpatched values (None: no patch)."""
    prefix = f"{model.family.denoiser}."
    names = {n for p in patching.applied(model) for n in p.deltas if n.startswith(prefix)}
    if not names:
        return None
    return {n.removeprefix(prefix): t for n, t in patching.base_tensors(model, names).items()}


def evaluate(
    model: DiffusionModel,
    patches: Sequence[str | os.PathLike | patching.Patch],
    suite: str,
    seeds: Sequence[int] | str = "0-3",
    steps: int = 35,
    guidance: float = 7.5,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = ".cache/erasekit/base-images",
    progress: bool = True,
    attack_steps: int | str | Sequence[int] = 0,
    clip_path: str | os.PathLike | None = None,
    attack: str = "concept-inversion",
    groups: Sequence[str] | None = None,
    attack_settings: dict[str, dict[str, Any]] | None = None,
    prompts_per_group: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Base vs patched on a suite (a YAML path or 'toyworld:shape=circle'), same seeds for both.

    groups: measure only these prompt groups of the suite (e.g. target, other); default: all of them.
    prompts_per_group: at most this many prompts of a group, spread evenly over its list (a suite lists
    its prompts by attribute, so every k-th prompt still covers each value), e.g. {"other": 30}.

    attack_steps: the attack budget, or a budget curve ('100,300,1000'; 0: no attack), run by every
    attack named in `attack` ('concept-inversion', 'hard-prompt', 'unlearndiff', 'ring-a-bell', 'p4d',
    or several, comma-separated); attack_settings: per attack name, settings overriding its defaults.
    """
    from erasekit.core.data import SamplingSettings
    from erasekit.eval.attack_names import parse_attacks, parse_budgets
    from erasekit.eval.detectors import get_detector
    from erasekit.eval.evaluate import evaluate as run_evaluation
    from erasekit.eval.suites import resolve_suite

    names = parse_attacks(attack)
    budgets = parse_budgets(attack_steps)
    resolved = resolve_suite(suite)
    if groups is not None:
        unknown = set(groups) - set(resolved.groups)
        if unknown or "target" not in groups:
            raise ErasekitError(f"groups must include 'target' and name groups of {resolved.name} "
                                f"({', '.join(resolved.groups)}), got {', '.join(groups)}")
        resolved = dataclasses.replace(resolved, groups={g: p for g, p in resolved.groups.items() if g in groups})
    if prompts_per_group:
        unknown = set(prompts_per_group) - set(resolved.groups)
        if unknown or any(int(n) < 1 for n in prompts_per_group.values()):
            raise ErasekitError(f"prompts_per_group must give a positive count for groups of {resolved.name} "
                                f"({', '.join(resolved.groups)}), got {prompts_per_group}")
        resolved = dataclasses.replace(resolved, groups={g: spread(p, prompts_per_group.get(g, len(p)))
                                                         for g, p in resolved.groups.items()})
    loaded = [p if isinstance(p, patching.Patch) else patching.Patch.load(p) for p in patches]
    settings = SamplingSettings(seeds=parse_seeds(seeds), steps=steps, guidance=guidance, batch_size=batch_size)
    from erasekit.eval.attacks import build_attack

    attacks = [build_attack(n, **(attack_settings or {}).get(n, {})) for n in names] if budgets else []
    return run_evaluation(model, loaded, resolved, get_detector(resolved.detector), settings,
                          cache_dir=cache_dir, progress=progress, attacks=attacks, attack_budgets=budgets,
                          clip_path=clip_path)


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """At most n of items, evenly spaced over the list (the first always kept)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def save_evaluation(result: dict[str, Any], out_dir: str | os.PathLike, info: dict | None = None) -> Path:
    """results.json (everything but pixels) and one grid per group: base rows above edited rows."""
    out = Path(out_dir)
    (out / "grids").mkdir(parents=True, exist_ok=True)
    n_seeds = len(result["sampling"]["seeds"])
    for group, base in result["images"]["base"].items():
        edited = result["images"]["edited"][group]
        shown = min(len(base), 8 * n_seeds)
        grid = image_grid(torch.cat([base[:shown], edited[:shown]]), columns=min(shown, 16))
        grid.save(out / "grids" / f"{group}.png")
    for name, images in result["images"].get("attacks", {}).items():
        image_grid(images[: 8 * n_seeds], columns=min(len(images), 16)).save(out / "grids" / f"attack-{name}.png")
    document = {k: v for k, v in result.items() if k != "images"} | (info or {})
    files.write_json(out / "results.json", document)
    return out
