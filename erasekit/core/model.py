"""Loading a Stable Diffusion pipeline and the one wrapper every method works through.

`load_model` accepts a diffusers directory, a hub id (resolved from the local
hub cache; nothing is downloaded unless the user allows it), a single
`.safetensors` checkpoint, or the built-in name `toyworld`. Pickle checkpoints
are refused: loading them executes arbitrary code.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, DiffusionPipeline

from erasekit.core.conditioning import Conditioning, as_conditioning
from erasekit.core.families import Family, family_of, list_families
from erasekit.core.sources import resolve_source
from erasekit.defaults import profile_of
from erasekit.errors import ErasekitError

log = logging.getLogger(__name__)

def load_pipeline(
    source: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    local_files_only: bool = True,
    torch_dtype: torch.dtype | None = None,
) -> DiffusionPipeline:
    """Load the pipeline of the model's family (erasekit.core.families) from a directory, hub id,
    single .safetensors file or 'toyworld'.

    `config` (a diffusers directory or hub id) gives the component configs of a single-file
    checkpoint, which otherwise would have to be fetched from the hub.
    """
    resolved = resolve_source(source)
    family = family_of(resolved)
    pipeline_class = family.pipeline_class()
    kwargs = dict(family.load_kwargs)
    if torch_dtype not in (None, torch.float32):  # float32 is diffusers' default (and spares its deprecation note)
        kwargs["torch_dtype"] = torch_dtype
    try:
        if isinstance(resolved, Path) and resolved.is_file():
            pipe = pipeline_class.from_single_file(
                str(resolved), config=str(config) if config else None, local_files_only=local_files_only, **kwargs
            )
        else:
            pipe = pipeline_class.from_pretrained(
                str(resolved), local_files_only=local_files_only, use_safetensors=True,
                **{**_absent_components(resolved), **kwargs}
            )
    except (OSError, ValueError) as exc:
        hint = " (not in the local hub cache; downloads are off)" if isinstance(resolved, str) else ""
        raise ErasekitError(f"could not load model {source!s}{hint}: {str(exc).splitlines()[0]}") from exc
    # DDIM with η = 0 everywhere: the methods' trajectories and the evaluation share one sampler. A
    # flow-matching scheduler (SD3, Flux) stays: core.sampler.make_sampler integrates its ODE.
    from erasekit.core.noising import is_flow_matching

    if not isinstance(pipe.scheduler, DDIMScheduler) and not is_flow_matching(pipe.scheduler):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _absent_components(source) -> dict[str, None]:
    """Components a pipeline directory saved as absent ([null, null] in model_index.json, e.g. SD3 without
    T5): diffusers' from_pretrained wants them passed as None."""
    index = Path(str(source)) / "model_index.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text())
    return {k: None for k, v in entries.items() if isinstance(v, list) and v == [None, None]}


def family_of_pipeline(pipe) -> Family:
    """The family whose pipeline class `pipe` is (or derives from)."""
    for family in list_families():
        if any(cls.__name__ in family.class_names for cls in type(pipe).__mro__):
            return family
    raise ErasekitError(f"erasekit serves no model family for a {type(pipe).__name__}")


def pipeline_components(pipe, family: Family) -> dict[str, torch.nn.Module]:
    """The pipeline's trainable components by the family's prefixes (`unet`, `transformer`, `text_encoder`, …)."""
    return {name: getattr(pipe, name) for name in family.components if getattr(pipe, name, None) is not None}


class PipelineView:
    """A user's own pipeline object as patching sees it (components and family), left otherwise untouched:
    no device move, no eval(), no requires_grad change."""

    def __init__(self, pipe: DiffusionPipeline) -> None:
        self.pipe = pipe
        self.family = family_of_pipeline(pipe)

    def named_modules(self) -> dict[str, torch.nn.Module]:
        return pipeline_components(self.pipe, self.family)


def load_tokenizer(source: str | os.PathLike, config: str | os.PathLike | None = None):
    """Only the tokenizer of a model (cheap), so that requests are checked before weights load."""
    from transformers import CLIPTokenizer

    resolved = resolve_source(source)
    base = config if isinstance(resolved, Path) and resolved.is_file() else resolved
    if base is None:
        return None
    try:
        return CLIPTokenizer.from_pretrained(str(base), subfolder="tokenizer", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ErasekitError(f"could not load the tokenizer of {source!s}: {str(exc).splitlines()[0]}") from exc


def encode_options_of(directory: Path) -> dict[str, Any]:
    """The "encode" options a model directory's training.json records (empty when it has none)."""
    record = directory / "training.json"
    if not record.is_file():
        return {}
    return dict(json.loads(record.read_text()).get("encode", {}))


class DiffusionModel:
    """What every method needs from a Stable Diffusion pipeline, in one place."""

    def __init__(self, pipe: DiffusionPipeline, device: str | torch.device | None = None) -> None:
        """The pipeline as it is: its weights' dtype is the model's; a reduced-precision VAE whose config
        says `force_upcast` (SD / SDXL VAEs overflow in fp16) runs in float32."""
        self.pipe = pipe
        if pipe.vae.dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
            pipe.vae.to(torch.float32)
        self.family = family_of_pipeline(pipe)
        self.source = "in-memory pipeline"  # what load() was given, for result records
        self.profile: str | None = None  # whose layer of method defaults applies (erasekit.defaults)
        # pipeline-call options the prompts are encoded with (SD3's max_sequence_length): a model
        # directory records them in training.json "encode" (the toy worlds do); none: the family's defaults
        self.encode_options: dict[str, Any] = {}
        if device is not None:
            pipe.to(device)
        for module in (*self.named_modules().values(), pipe.vae):
            module.requires_grad_(False)
            module.eval()

    @classmethod
    def load(cls, source: str | os.PathLike, device: str | torch.device | None = None, **kwargs) -> DiffusionModel:
        """Load a model; a pipeline exported with patches gets them re-attached (so they can be removed)."""
        from erasekit.core.patch import restore_applied

        model = cls(load_pipeline(source, **kwargs), device=device)
        model.source = str(source)
        model.profile = profile_of(source)
        resolved = resolve_source(source)
        if isinstance(resolved, Path) and resolved.is_dir():
            restore_applied(model, resolved)
            model.encode_options = encode_options_of(resolved)
        return model

    # ------------------------------------------------------------ components
    @property
    def denoiser(self) -> torch.nn.Module:
        """The network that predicts ε / v (the family's: a UNet, or an MMDiT's transformer)."""
        return getattr(self.pipe, self.family.denoiser)

    @property
    def text_encoder(self) -> torch.nn.Module:
        return self.pipe.text_encoder

    @property
    def tokenizer(self):
        """The family's first tokenizer (CLIP): the vocabulary of requests, placeholders and embeddings."""
        return self.pipe.tokenizer

    @property
    def sequence_tokenizer(self):
        """The tokenizer whose positions index a Conditioning's hidden tokens (Flux: T5's; else the first)."""
        return getattr(self.pipe, self.family.sequence_tokenizer)

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def scheduler(self) -> DDIMScheduler:
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the frozen networks' weights (latents, conditions and predictions outside
        the networks stay float32; the networks run under autocast in this dtype)."""
        return self.denoiser.dtype

    def autocast(self):
        """Run the networks in the weights' precision, with float32 tensors (trained master copies,
        latents) cast per operation; a no-op at float32."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        if self.family.latent_size is not None:
            channels, size = self.family.latent_size(self.pipe)
        else:
            channels, size = self.denoiser.config.in_channels, self.denoiser.config.sample_size
        return (channels, size, size)

    @property
    def image_size(self) -> int:
        return self.latent_shape[-1] * self.pipe.vae_scale_factor

    def named_modules(self) -> dict[str, torch.nn.Module]:
        """The trainable components by prefix (the family's), as parameter scopes and patches name them."""
        return pipeline_components(self.pipe, self.family)

    @property
    def context_dim(self) -> int:
        """The width of the text context (SD 1.x: 768, SDXL: 2048, SD3: 4096)."""
        return int(self.denoiser.config[self.family.context_key])

    # -------------------------------------------------------------- encoding
    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)

    def encode(self, prompts: Sequence[str] | str) -> Conditioning:
        """The prompts as the denoiser reads them (the family's Conditioning), batch (B, L, D)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        with self.autocast():
            return self.family.encode(self.pipe, list(prompts), **self.encode_options).float()

    # ------------------------------------------------------------ denoising
    def eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        cond: Conditioning | torch.Tensor,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The model's prediction (ε, or v on a v-prediction model) for every latent under every
        condition, in one UNet call.

        x_t: (B, C, H, W); cond: (K, L, D) or (K, B, L, D). Returns (K, B, C, H, W).
        weights: denoiser tensors to use instead of the live ones (e.g. a frozen teacher's copy of
        the parameters being trained), by their names inside the denoiser.
        """
        cond = as_conditioning(cond)
        b, k = x_t.shape[0], cond.shape[0]
        if cond.dim() == 3:
            cond = cond[:, None].expand(k, b, *cond.shape[1:])
        elif cond.dim() != 4 or cond.shape[1] != b:
            raise ValueError(f"cond must be (K, L, D) or (K, {b}, L, D), got {tuple(cond.shape)}")
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(b) if t.dim() == 0 else t
        x = x_t.unsqueeze(0).expand(k, *x_t.shape).reshape(k * b, *x_t.shape[1:])
        flat = cond.flatten_batch()
        args, kwargs = self.family.denoiser_inputs(x, t.repeat(k), flat.hidden, flat.extras)
        with self.autocast():
            if weights:
                out = torch.func.functional_call(self.denoiser, weights, args, kwargs, strict=False).sample
            else:
                out = self.denoiser(*args, **kwargs).sample
        if self.family.denoiser_output is not None:
            out = self.family.denoiser_output(out, x.shape)
        return out.float().view(k, b, *x_t.shape[1:])

    # -------------------------------------------------------------- latents
    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → images in [0, 1], (B, 3, H, W), float32."""
        shift = self.vae.config.get("shift_factor") or 0.0  # SD3 / Flux VAEs centre their latents
        images = self.vae.decode((latents / self.vae.config.scaling_factor + shift).to(self.vae.dtype)).sample
        return ((images.float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → scaled latents (posterior mean)."""
        x = images.to(self.device, self.vae.dtype) * 2 - 1
        shift = self.vae.config.get("shift_factor") or 0.0
        return (self.vae.encode(x).latent_dist.mean.float() - shift) * self.vae.config.scaling_factor

    def seeded_noise(self, seeds: Sequence[int], shape: Sequence[int] | None = None) -> torch.Tensor:
        """Standard normal noise of `shape` (default: the latent shape) per seed, drawn on the CPU so
        that images match across devices."""
        shape = tuple(shape or self.latent_shape)
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(noise).to(self.device)

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """x_T for each seed."""
        return self.seeded_noise(seeds) * getattr(self.scheduler, "init_noise_sigma", 1.0)  # flow matching: 1
