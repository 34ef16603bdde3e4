"""Images a method or the evaluation draws from a model, cached on disk by model fingerprint.

Comparing ten patches samples the base once; a second erasure run with the same anchor or
concept images samples nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from erasekit.core import files
from erasekit.core import patch as patching
from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import named_parameters


@dataclass
class SamplingSettings:
    seeds: list[int]
    steps: int = 35
    guidance: float = 7.5
    batch_size: int = 64


def model_fingerprint(model: DiffusionModel) -> str:
    """Fingerprint of the weights the model draws with: its base weights and the patches applied to them."""
    params = named_parameters(model.named_modules())
    return "+".join([patching.base_fingerprint(model, params), *patching.applied_signature(model)])


class ImageCache:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def key(self, fingerprint: str, prompts: Sequence[str], settings: SamplingSettings) -> str:
        # Batch size is left out: batching does not change an image.
        payload = json.dumps({"model": fingerprint, "prompts": list(prompts), "seeds": settings.seeds,
                              "steps": settings.steps, "guidance": settings.guidance}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def get(self, key: str) -> torch.Tensor | None:
        return files.load_cached(self.directory / f"{key}.safetensors", lambda p: load_file(str(p))["images"])

    def put(self, key: str, images: torch.Tensor) -> None:
        files.write_safetensors(self.directory / f"{key}.safetensors", {"images": images})


def distributed_generate(
    model: DiffusionModel, prompts: Sequence[str], settings: SamplingSettings, progress: bool = True
) -> torch.Tensor:
    """generate_images, sharded over `accelerate launch` processes (pair i on process i mod n) and
    gathered, so every process returns every image; one process just generates."""
    from erasekit.core.distributed import processes

    state = processes()
    kw = dict(steps=settings.steps, guidance=settings.guidance, batch_size=settings.batch_size)
    if state.num_processes == 1:
        return generate_images(model, list(prompts), settings.seeds, progress=progress, **kw)
    from accelerate.utils import gather_object

    mine = list(range(state.process_index, len(prompts), state.num_processes))
    images = generate_images(model, [prompts[i] for i in mine], [settings.seeds[i] for i in mine],
                             progress=progress and state.is_main_process, **kw)
    gathered = gather_object([(i, images[j].cpu()) for j, i in enumerate(mine)])
    ordered = sorted(gathered, key=lambda pair: pair[0])
    return torch.stack([image for _, image in ordered])


def cached_images(
    model: DiffusionModel,
    prompts: Sequence[str],
    settings: SamplingSettings,
    cache_dir: str | os.PathLike | None,
    progress: bool = True,
) -> torch.Tensor:
    """Images for the pairs (prompts[i], settings.seeds[i]), from the cache when there."""
    cache = ImageCache(cache_dir) if cache_dir else None
    key = cache.key(model_fingerprint(model), prompts, settings) if cache else None
    images = cache.get(key) if cache else None
    if images is None:
        # The sampler's images come channels-last; the cache gives them back contiguous. Convolutions pick other
        # kernels by layout (last-bit differences, which adversarial training amplifies), so a run must not
        # depend on whether the cache was warm: both paths hand on the contiguous tensor.
        images = distributed_generate(model, prompts, settings, progress).contiguous()
        if cache and _is_main_process():
            cache.put(key, images)
    return images


def _is_main_process() -> bool:
    from erasekit.core.distributed import processes

    return processes().is_main_process


def concept_latents(
    model: DiffusionModel,
    prompts: Sequence[str],
    n_images: int,
    steps: int,
    guidance: float,
    seed: int,
    cache_dir: str | os.PathLike | None,
    progress: bool = True,
) -> torch.Tensor:
    """VAE latents of n_images base-model images cycling through `prompts` (image i from prompt i mod P)."""
    chosen = [prompts[i % len(prompts)] for i in range(n_images)]
    settings = SamplingSettings(seeds=[seed * 100_000 + i for i in range(n_images)], steps=steps, guidance=guidance)
    images = cached_images(model, chosen, settings, cache_dir, progress)
    return torch.cat([model.encode_images(images[i : i + 64]) for i in range(0, len(images), 64)])
