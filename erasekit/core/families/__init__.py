"""Model families: where everything that differs between SD, SDXL, SD3 and Flux lives.

A family is registered once (one module per family under this package) and found by name or by a
pipeline directory's `model_index.json`; nothing else tests a family's name. A family module imports
neither torch nor diffusers at import time (its functions do, when called), so that `erasekit ls
families` and the CLI's checks answer at once.

What a family knows: its pipeline class, its trainable components (the prefixes of parameter and
patch names), how prompts become a `Conditioning` and how that reaches its denoiser, its parameter
scopes, its native resolution, its layer of method defaults and whether it has a single-file layout
erasekit can export.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erasekit.errors import ErasekitError

# What a method may need from a family (MethodSpec.needs); a family lists what it has.
CAPABILITIES: dict[str, str] = {
    "unconditional-branch": "an unconditional prediction ε(∅) for classifier-free guidance",
    "text-attention-map": "attention where image queries read text tokens, recorded and rescaled per token "
                          "(UNet attn2, MMDiT joint attention, Flux's joint and single blocks)",
}


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    pipeline: str  # the diffusers pipeline class that loads it
    class_names: tuple[str, ...]  # model_index.json `_class_name`s that are this family's
    components: tuple[str, ...]  # trainable components: the prefixes of parameter names and patches
    text_encoders: tuple[str, ...]  # the components that read tokens (the `embedding` scope's tables)
    native_resolution: int
    # (pipe, prompts, **the model's encode options) -> Conditioning; its token positions follow the
    # pipeline's first tokenizer. Options are pipeline-call arguments (e.g. SD3's max_sequence_length).
    encode: Callable[..., Any]
    # (x_t, timesteps, context hidden states, a Conditioning's extras flattened to one batch dim) ->
    # (args, kwargs) of the denoiser's call
    denoiser_inputs: Callable[[Any, Any, Any, Mapping[str, Any]], tuple[tuple, dict[str, Any]]]
    scopes: Mapping[str, Callable[[str], bool]]  # scope name -> selects a parameter by its name
    scope_descriptions: Mapping[str, str]
    capabilities: frozenset[str] = frozenset(CAPABILITIES)
    denoiser: str = "unet"  # the component that predicts ε / v (a UNet, or an MMDiT's `transformer`)
    context_key: str = "cross_attention_dim"  # the denoiser config's width of the text context
    # the original (A1111 / ComfyUI) single-file layout of its text encoders, for `patch export --single-file`:
    # (component, key prefix, "hf-clip" | "open-clip") each; empty: not written, single_file_note says why
    single_file_text: tuple[tuple[str, str, str], ...] = ()
    single_file_note: str = ""
    # a key only this family's original-layout single files have (e.g. SDXL's second text encoder)
    single_file_marker: str = ""
    # (denoiser output's .sample, the latents' shape) -> (N, C, H, W), for denoisers that work on
    # another layout (Flux: 2×2-packed tokens); None: the output already is the latents' shape
    denoiser_output: Callable[[Any, tuple[int, ...]], Any] | None = None
    # (pipe) -> (channels, side) of the latents; None: the denoiser config's in_channels and sample_size
    latent_size: Callable[[Any], tuple[int, int]] | None = None
    # (pipe, steps, latents' shape) -> keyword arguments of the scheduler's set_timesteps, as the
    # family's pipeline sets them (Flux: its sigmas and the resolution's shift mu); None: steps alone
    timestep_options: Callable[[Any, int, tuple[int, ...]], dict[str, Any]] | None = None
    # classifier-free guidance with an ε(∅) pass when sampling; False: the guidance scale is given to
    # the denoiser (a guidance-distilled model's embedding) in one pass per step
    cfg: bool = True
    # the pipeline's tokenizer whose token positions the Conditioning's hidden sequence follows
    sequence_tokenizer: str = "tokenizer"
    # The linear layers that read the conditioning itself, for closed-form edits (UCE): the scope that
    # holds them and, per weight (a regex on its name), the Conditioning field its input rows come from
    # ("hidden": one row per token; another name: that extra, one row per prompt).
    reader_scope: str = "xattn-kv"
    readers: tuple[tuple[str, str], ...] = ((r"\.to_[kv]\.weight$", "hidden"),)
    # extra keyword arguments of the pipeline's from_pretrained / from_single_file
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # method -> values: the family's layer of method defaults (erasekit.defaults), above the paper's
    method_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def reader_field(self, name: str) -> str | None:
        """The Conditioning field a parameter (full name) reads, if it is one of the family's readers."""
        if not self.scopes[self.reader_scope](name):
            return None
        return next((field for pattern, field in self.readers if re.search(pattern, name)), None)

    @property
    def exports_single_file(self) -> bool:
        return bool(self.single_file_text)

    def pipeline_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline)


_FAMILIES: dict[str, Family] = {}
_LOADED = False


def register_family(family: Family) -> None:
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"family {family.name!r} registered twice")
    _FAMILIES[family.name] = family


def _load() -> None:
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def list_families() -> list[Family]:
    _load()
    return [_FAMILIES[k] for k in sorted(_FAMILIES)]


def get_family(name: str) -> Family:
    from erasekit.registry import suggest

    _load()
    if name not in _FAMILIES:
        raise ErasekitError(f"unknown model family {name!r}{suggest(name, _FAMILIES)}")
    return _FAMILIES[name]


DEFAULT_FAMILY = "sd"  # hub ids and single files not otherwise recognised


def _model_index(source: str | os.PathLike) -> Path | None:
    """model_index.json of a pipeline directory, or of a hub id in the local hub cache."""
    index = Path(source) / "model_index.json"
    if index.is_file():
        return index
    text = str(source)
    if Path(text).exists() or text.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(text, "model_index.json")
    return Path(cached) if isinstance(cached, str) else None


def _single_file_family(path: Path) -> Family:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        keys = list(f.keys())
    for family in _FAMILIES.values():
        if family.single_file_marker and any(k.startswith(family.single_file_marker) for k in keys):
            return family
    return get_family(DEFAULT_FAMILY)


def family_of(source: str | os.PathLike) -> Family:
    """The family of a pipeline directory or cached hub id (its model_index.json `_class_name`) or of a
    single .safetensors file (its keys); SD for anything else. A pipeline no family serves is one clear
    error."""
    _load()
    path = Path(source)
    if path.is_file() and path.suffix == ".safetensors":
        return _single_file_family(path)
    index = _model_index(source)
    if index is None:
        return get_family(DEFAULT_FAMILY)
    try:
        class_name = json.loads(index.read_text()).get("_class_name", "")
    except ValueError as exc:
        raise ErasekitError(f"{index} is not valid JSON: {exc}") from exc
    for family in _FAMILIES.values():
        if class_name in family.class_names:
            return family
    served = ", ".join(f"{f.name} ({f.pipeline})" for f in list_families())
    raise ErasekitError(f"{source} is a {class_name or 'pipeline of unknown class'}; erasekit serves: {served}")
