"""Patches as LoRA adapters that plain diffusers loads with `pipe.load_lora_weights()`.

Each edited linear / conv weight ΔW becomes a low-rank pair by truncated SVD, ΔW ≈ U_r S_r V_rᵀ with
lora_B = U_r S_r^½ and lora_A = S_r^½ V_rᵀ (r = min(out, in) is exact). Keys are diffusers' PEFT layout,
prefixed with the component, which is also how patches name tensors (`unet.`, `transformer.`,
`text_encoder.`, `text_encoder_2.`): `unet.<module>.lora_A.weight`, `.lora_B.weight`, and a bias edit as
`.lora_B.bias` (PEFT's lora_bias). No alpha keys are written, so diffusers takes alpha = r: the scale
is 1 and ΔW = B·A exactly (SDXL's and SD3's loaders reject bare alpha keys; docs/lora.md).
Embedding-row edits (CA's `embedding` scope), weights of other modules, and components the family's
pipeline does not load LoRAs into (its `_lora_loadable_modules`: e.g. Flux's T5, SD3's T5) have no
LoRA form: refused in one line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from erasekit.core import files
from erasekit.core.patch import Patch
from erasekit.errors import ErasekitError

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"  # the name `load_lora_weights(directory)` looks for
REPORT_FILE = "erasekit_lora.json"
KOHYA_PREFIXES = ("lora_unet_", "lora_te1_", "lora_te2_")  # a UNet and the (up to two) CLIP text encoders


@dataclass(frozen=True)
class RankChoice:
    """Exactly one of: a fixed rank (capped at full rank), or the energy share the kept singular values hold."""

    rank: int | None = None
    energy: float | None = None

    def __post_init__(self) -> None:
        if self.rank is not None and self.energy is not None:
            raise ErasekitError("give --rank or --energy, not both")
        if self.rank is not None and self.rank < 1:
            raise ErasekitError(f"--rank must be ≥ 1, got {self.rank}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ErasekitError(f"--energy must be in (0, 1], got {self.energy}")

    def of(self, singular: torch.Tensor) -> int:
        full = int(singular.numel())
        if self.rank is not None:
            return min(self.rank, full)
        if self.energy is None:
            return full
        share = torch.cumsum(singular.double() ** 2, 0) / (singular.double() ** 2).sum().clamp_min(1e-300)
        return min(full, int(torch.searchsorted(share, torch.tensor(self.energy, dtype=share.dtype) - 1e-12)) + 1)


def _module(model, key: str) -> tuple[str, torch.nn.Module, str]:
    """'unet.a.b.weight' → ('unet.a.b', the module, 'weight')."""
    component, _, rest = key.partition(".")
    path, _, param = rest.rpartition(".")
    modules = model.named_modules()
    if component not in modules:
        raise ErasekitError(f"patch tensor {key} names no component of this model")
    return f"{component}.{path}", modules[component].get_submodule(path), param


def _factor(delta: torch.Tensor, choice: RankChoice) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(lora_A, lora_B, r, relative Frobenius error) of one linear (out, in) or conv (out, in, kh, kw) ΔW."""
    matrix = delta.detach().double().reshape(delta.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    r = choice.of(s)
    root = s[:r].sqrt()
    b, a = u[:, :r] * root, root[:, None] * vh[:r]
    total = s.pow(2).sum()
    error = float((s[r:].pow(2).sum() / total).sqrt()) if total > 0 else 0.0
    if delta.dim() == 4:  # conv: A is a conv of the original kernel, B a 1×1 conv
        a = a.reshape(r, *delta.shape[1:])
        b = b.reshape(delta.shape[0], r, 1, 1)
    return a.to(delta.dtype).contiguous(), b.to(delta.dtype).contiguous(), r, error


def lora_tensors(model, patch: Patch, choice: RankChoice) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The LoRA state dict of `patch` on `model`'s modules, and per module its rank and relative error."""
    loadable = getattr(model.family.pipeline_class(), "_lora_loadable_modules", None)
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, delta in patch.deltas.items():
        component = key.partition(".")[0]
        if loadable is not None and component not in loadable:
            # diffusers' loader would skip these keys without a word, and the edit would be lost
            raise ErasekitError(f"patch export --format lora: {model.family.pipeline}.load_lora_weights() loads "
                                f"{', '.join(loadable)}, not {component} (edited by this patch, e.g. {key}); "
                                "export a diffusers directory instead")
        name, module, param = _module(model, key)
        if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d) or param not in ("weight", "bias"):
            raise ErasekitError(f"patch export --format lora: {key} belongs to a {type(module).__name__}, which a "
                                "LoRA cannot carry (LoRA edits linear and conv weights); export a diffusers "
                                "directory instead")
        by_module.setdefault(name, {})[param] = delta
    tensors: dict[str, torch.Tensor] = {}
    report = []
    for name, deltas in sorted(by_module.items()):
        weight = deltas.get("weight")
        if weight is None:  # a bias-only edit still needs the pair that carries lora_B.bias
            module = _module(model, f"{name}.bias")[1]
            weight = torch.zeros_like(module.weight)
        a, b, r, error = _factor(weight, choice)
        tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = a, b
        if "bias" in deltas:
            tensors[f"{name}.lora_B.bias"] = deltas["bias"].contiguous()
        report.append({"module": name, "shape": list(weight.shape), "rank": r,
                       "full_rank": min(weight.shape[0], weight[0].numel()), "relative_error": error})
    if any(k.endswith(".lora_B.bias") for k in tensors):
        # PEFT's lora_bias is one switch for the whole adapter: a module without a bias edit gets a zero
        # bias, else the loader would leave its lora_B bias at its random initialisation.
        for name in by_module:
            b = tensors[f"{name}.lora_B.weight"]
            tensors.setdefault(f"{name}.lora_B.bias", torch.zeros(b.shape[0], dtype=b.dtype))
    return tensors, report


def kohya_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The A1111 / ComfyUI (kohya) layout of a LoRA state dict, by diffusers' own converter (lora_unet_…,
    lora_te1_…, lora_down / lora_up, alpha = rank so the scale stays 1). Kohya files have no bias terms."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    biased = sorted(k for k in tensors if k.endswith(".lora_B.bias") and tensors[k].abs().max() > 0)
    if biased:
        raise ErasekitError(f"--format kohya: the kohya layout has no bias terms, and this patch edits "
                            f"{len(biased)} biases (e.g. {biased[0].removesuffix('.lora_B.bias')}.bias); use "
                            "--format lora, or erase with a scope of weights only (xattn-kv)")
    weights = {k: v for k, v in tensors.items() if not k.endswith(".lora_B.bias")}
    converted = convert_state_dict_to_kohya(weights)
    unnamed = sorted(k for k in converted if not k.startswith(KOHYA_PREFIXES))
    if unnamed:
        # the converter names UNets and CLIP encoders only; an MMDiT's kohya files use the original
        # checkpoints' fused module names, which no diffusers converter writes
        raise ErasekitError(f"--format kohya: the kohya layout has no names for {unnamed[0].split('_')[0]} modules "
                            f"(e.g. {unnamed[0].split('.')[0]}); use --format lora, which diffusers loads")
    return {k: v.contiguous() for k, v in converted.items()}


def export_lora(model, patch: Patch, out_dir: str | os.PathLike, choice: RankChoice, kohya: bool = False) -> Path:
    """Write `out_dir/pytorch_lora_weights.safetensors` (kohya: the A1111 / ComfyUI layout) and
    `erasekit_lora.json` (ranks, errors, sizes)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ErasekitError(f"{out_dir} exists and is not an empty directory; choose a new one")
    tensors, report = lora_tensors(model, patch, choice)
    if kohya:
        tensors = kohya_tensors(tensors)
    lora_values = sum(t.numel() for t in tensors.values())
    summary = {"patch": patch.summary(), "layout": "kohya" if kohya else "peft",
               "rank_choice": {"rank": choice.rank, "energy": choice.energy},
               "values": lora_values, "patch_values": patch.num_values(),
               "max_relative_error": max((t["relative_error"] for t in report), default=0.0), "tensors": report}
    with files.atomic_directory(out_dir) as tmp:
        files.write_safetensors(tmp / LORA_FILE, tensors, metadata={"format": "pt"})
        summary["bytes"] = (tmp / LORA_FILE).stat().st_size
        files.write_json(tmp / REPORT_FILE, summary)
    log.info("LoRA: %d modules, %d values (patch: %d), max relative error %.2e", len(report), lora_values,
             patch.num_values(), summary["max_relative_error"])
    return out_dir


def lora_patch(tensors: dict[str, torch.Tensor], like: Patch) -> Patch:
    """The patch a LoRA state dict amounts to (ΔW = B·A, bias = lora_B.bias), on `like`'s base model: how
    a benchmark measures what the truncation costs, with the same evaluation as the patch itself."""
    deltas: dict[str, torch.Tensor] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removesuffix(".lora_A.weight")
        b = tensors[f"{name}.lora_B.weight"]
        weight = f"{name}.weight"
        if weight in like.deltas:
            deltas[weight] = (b.flatten(1) @ a.flatten(1)).reshape(like.deltas[weight].shape)
        if f"{name}.bias" in like.deltas:
            deltas[f"{name}.bias"] = tensors[f"{name}.lora_B.bias"]
    return Patch(deltas=deltas, method=like.method, config=like.config, concepts=like.concepts,
                 base_fingerprint=like.base_fingerprint, erasekit_version=like.erasekit_version,
                 info={**like.info, "from_lora": True}, family=like.family)
