"""Patches: the weight deltas an erasure produces, as one .safetensors file.

A model's touched weights are always `base + Σ scale_i · delta_i` over the
patches applied to it, recomputed from a saved copy of the base tensors. So
`remove` restores the base bit-for-bit, and stacking two patches into one
gives exactly the weights of applying both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import erasekit
from erasekit.core import files
from erasekit.errors import ErasekitError

log = logging.getLogger(__name__)

FORMAT = "erasekit.patch/1"
# info keys written after a patch is made (by api.erase, the CLI's check, a cache that reused it): not part of its id.
ANNOTATIONS = ("config_sources", "check", "reused")


class FingerprintMismatch(ErasekitError):
    """The patch was made for another base model."""


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes and float32 bytes of the given base tensors."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass
class Patch:
    deltas: dict[str, torch.Tensor]
    method: str
    config: dict[str, Any]
    concepts: list[str]
    base_fingerprint: str
    erasekit_version: str = erasekit.__version__
    info: dict[str, Any] = field(default_factory=dict)
    family: str = "sd"  # the model family it was made on (patches written before families existed: sd)

    # ------------------------------------------------------------ creation
    @classmethod
    def from_weights(
        cls,
        base: dict[str, torch.Tensor],
        edited: dict[str, torch.Tensor],
        method: str,
        config: dict[str, Any],
        concepts: Sequence[str],
        info: dict[str, Any] | None = None,
        base_fingerprint: str | None = None,
        family: str = "sd",
    ) -> Patch:
        """Deltas edited − base (float32) of the named tensors.

        base_fingerprint: of the model's unpatched tensors (`base_fingerprint(model, names)`) when `base`
        already carries other patches; default: the fingerprint of `base` itself.
        """
        if set(base) != set(edited):
            raise ValueError("base and edited must name the same tensors")
        deltas = {
            name: (edited[name].detach().float().cpu() - base[name].detach().float().cpu()).contiguous()
            for name in base
        }
        return cls(deltas, method, dict(config), list(concepts), base_fingerprint or fingerprint(base),
                   info=dict(info or {}), family=family)

    @property
    def id(self) -> str:
        """Hash of what the patch does (deltas, method, config, concepts, base); annotations added after it
        was made (ANNOTATIONS: where its config came from, its post-erase check) leave it unchanged."""
        meta = self._metadata() | {"info": json.dumps({k: v for k, v in self.info.items() if k not in ANNOTATIONS},
                                                      sort_keys=True)}
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        for name in sorted(self.deltas):
            digest.update(name.encode())
            digest.update(self.deltas[name].numpy().tobytes())
        return digest.hexdigest()[:12]

    def num_values(self) -> int:
        return sum(t.numel() for t in self.deltas.values())

    # ------------------------------------------------------------------ I/O
    def _metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "method": self.method,
            "config": json.dumps(self.config, sort_keys=True),
            "concepts": json.dumps(self.concepts),
            "base_fingerprint": self.base_fingerprint,
            "erasekit_version": self.erasekit_version,
            "info": json.dumps(self.info, sort_keys=True),
            "family": self.family,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file renamed into place, never a half-written patch."""
        return files.write_safetensors(path, self.deltas, metadata=self._metadata())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Patch:
        path = Path(path)
        if not path.exists():
            raise ErasekitError(f"patch {path} does not exist")
        if path.suffix != ".safetensors":
            raise ErasekitError(f"patch {path.name} is not a .safetensors file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                deltas = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise ErasekitError(f"cannot read patch {path}: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise ErasekitError(f"{path.name} is not an erasekit patch (format {meta.get('format')!r})")
        return cls(
            deltas=deltas,
            method=meta["method"],
            config=json.loads(meta["config"]),
            concepts=json.loads(meta["concepts"]),
            base_fingerprint=meta["base_fingerprint"],
            erasekit_version=meta["erasekit_version"],
            info=json.loads(meta.get("info", "{}")),
            family=meta.get("family", "sd"),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "family": self.family,
            "concepts": self.concepts,
            "config": self.config,
            "base_fingerprint": self.base_fingerprint,
            "erasekit_version": self.erasekit_version,
            "tensors": len(self.deltas),
            "values": self.num_values(),
            "info": self.info,
        }


def stack(patches: Sequence[Patch]) -> Patch:
    """One patch equal to applying all of them (deltas summed in order)."""
    if not patches:
        raise ErasekitError("nothing to stack")
    families = {p.family for p in patches}
    if len(families) > 1:
        raise ErasekitError(f"cannot stack patches of different model families ({', '.join(sorted(families))})")
    deltas: dict[str, torch.Tensor] = {}
    for patch in patches:
        for name, delta in patch.deltas.items():
            deltas[name] = deltas[name] + delta if name in deltas else delta.clone()
    # The stacked base fingerprint covers every touched tensor; patches keep theirs in `info`.
    return Patch(
        deltas=deltas,
        method="stack",
        config={"patches": [p.summary() | {"info": None} for p in patches]},
        concepts=[c for p in patches for c in p.concepts],
        base_fingerprint="+".join(p.base_fingerprint for p in patches),
        info={"parts": [{"id": p.id, "base_fingerprint": p.base_fingerprint, "tensors": sorted(p.deltas)}
                        for p in patches]},
        family=families.pop(),
    )


class PatchState:
    """Which patches a model carries, and the base tensors they were applied on."""

    def __init__(self) -> None:
        self.base: dict[str, torch.Tensor] = {}
        self.applied: list[tuple[Patch, float]] = []


def _state(model) -> PatchState:
    # Kept on the pipeline itself, so every wrapper of one pipeline (a DiffusionModel, a user's pipeline
    # passed to erasekit.apply) sees the same patches and base tensors.
    holder = getattr(model, "pipe", model)
    if not hasattr(holder, "_erasekit_patches"):
        holder._erasekit_patches = PatchState()
    return holder._erasekit_patches


def _parameter(model, name: str) -> torch.nn.Parameter:
    prefix, _, rest = name.partition(".")
    modules = model.named_modules()
    if prefix not in modules:
        raise ErasekitError(f"patch touches {name!r}, but the model has no component {prefix!r}")
    try:
        return modules[prefix].get_parameter(rest)
    except AttributeError as exc:
        raise ErasekitError(f"patch touches {name!r}, which this model does not have") from exc


def base_tensors(model, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The model's unpatched values of the named tensors."""
    state = _state(model)
    return {n: state.base[n] if n in state.base else _parameter(model, n).detach() for n in names}


def base_fingerprint(model, names: Iterable[str]) -> str:
    """Fingerprint of the named tensors' unpatched values. A patch made on a model that carries other
    patches records this, so it fits the base it will be stacked on, next to those patches."""
    return fingerprint(base_tensors(model, names))


def made_on(model) -> dict[str, Any]:
    """What a new patch's `info` records about the patches the model carried while it was made."""
    ids = [p.id for p, _ in _state(model).applied]
    return {"trained_on": ids} if ids else {}


def applied_signature(model) -> list[str]:
    """'id@scale' of each applied patch, in order: what the weights carry on top of the base."""
    return [f"{p.id}@{scale:g}" for p, scale in _state(model).applied]


def check_fingerprint(model, patch: Patch) -> None:
    family = getattr(getattr(model, "family", None), "name", patch.family)
    if patch.family != family:
        raise FingerprintMismatch(f"patch was made on a {patch.family} model; this model is {family}: apply it to "
                                  "the model it was made from")
    parts = patch.info.get("parts") if patch.method == "stack" else None
    checks = parts or [{"base_fingerprint": patch.base_fingerprint, "tensors": sorted(patch.deltas)}]
    for part in checks:
        for name in part["tensors"]:
            base = base_tensors(model, [name])[name]
            if tuple(base.shape) != tuple(patch.deltas[name].shape):
                raise FingerprintMismatch(
                    f"patch does not fit this model: {name} has shape {tuple(base.shape)}, "
                    f"patch expects {tuple(patch.deltas[name].shape)}"
                )
        found = fingerprint(base_tensors(model, part["tensors"]))
        if found != part["base_fingerprint"]:
            raise FingerprintMismatch(
                f"patch was made for another base model (fingerprint {part['base_fingerprint']}, "
                f"this model {found}); apply it to the model it was made from"
            )


@torch.no_grad()
def _refresh(model, names: Iterable[str]) -> None:
    state = _state(model)
    for name in sorted(set(names)):
        total = None
        for patch, scale in state.applied:
            if name in patch.deltas:
                d = patch.deltas[name] * scale if scale != 1.0 else patch.deltas[name]
                total = d.clone() if total is None else total + d
        param = _parameter(model, name)
        base = state.base[name]
        if total is None:
            param.copy_(base)
            del state.base[name]
        else:
            param.copy_((base.float() + total.to(base.device)).to(param.dtype))


def apply(model, patch: Patch, scale: float = 1.0) -> None:
    """Apply a patch on top of whatever the model carries (after checking it was made for this base)."""
    check_fingerprint(model, patch)
    state = _state(model)
    required = set(patch.info.get("trained_on", []))
    # Patch ids hash every delta: only computed for a patch that names prerequisites.
    missing = sorted(required - {p.id for p, _ in state.applied}) if required else []
    if missing:
        # Allowed (removing one of them later is how a concept is restored), but usually a mistake.
        log.warning("patch %s was made on a model carrying patches %s, which are not applied here "
                    "(as meant when one of them was removed to restore its concept)",
                    patch.id, ", ".join(missing))
    for name in patch.deltas:
        if name not in state.base:
            state.base[name] = _parameter(model, name).detach().clone()
    state.applied.append((patch, float(scale)))
    _refresh(model, patch.deltas)
    log.info("applied patch %s (%s, %s) x%.3g", patch.id, patch.method, ", ".join(patch.concepts), scale)


def remove(model, patch: Patch) -> None:
    """Take a patch off; with none left the touched tensors are the base bit-for-bit."""
    state = _state(model)
    ids = [p.id for p, _ in state.applied]
    if patch.id not in ids:
        raise ErasekitError(f"patch {patch.id} is not applied to this model")
    del state.applied[ids.index(patch.id)]
    _refresh(model, patch.deltas)


@contextlib.contextmanager
def applied_temporarily(model, patches: Sequence[Patch]):
    """`with applied_temporarily(model, patches):` the model carries them inside the block only."""
    done = []
    try:
        for p in patches:
            apply(model, p)
            done.append(p)
        yield model
    finally:
        for p in reversed(done):
            remove(model, p)


@contextlib.contextmanager
def removed_temporarily(model, patches: Sequence[Patch]):
    """`with removed_temporarily(model, patches):` the model is without them inside the block only
    (an attack that needs the base model's predictions while it attacks the patched one)."""
    for p in reversed(patches):
        remove(model, p)
    try:
        yield model
    finally:
        for p in patches:
            apply(model, p)


def applied(model) -> list[Patch]:
    return [p for p, _ in _state(model).applied]


SIDECAR = "erasekit"


def export_pipeline(model, out_dir: str | os.PathLike, keep_base: bool = True) -> Path:
    """Write the model with its applied patches as a plain diffusers pipeline directory.

    keep_base: also store the touched base tensors and the patches in an `erasekit/` side folder
    (plain diffusers ignores it), so that `erasekit patch remove` can later restore the base exactly.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ErasekitError(f"{out_dir} exists and is not an empty directory; choose a new one")
    with files.atomic_directory(out_dir) as tmp:
        model.pipe.save_pretrained(tmp, safe_serialization=True)
        state = _state(model)
        provenance = {"erasekit_version": erasekit.__version__, "patches": [p.summary() for p in applied(model)]}
        (tmp / "erasekit.json").write_text(json.dumps(provenance, indent=2))
        if keep_base and state.applied:
            side = tmp / SIDECAR
            side.mkdir()
            save_file({k: v.detach().cpu().contiguous() for k, v in state.base.items()}, str(side / "base.safetensors"))
            order = []
            for i, (patch, scale) in enumerate(state.applied):
                patch.save(side / f"patch-{i:02d}-{patch.id}.safetensors")
                order.append({"file": f"patch-{i:02d}-{patch.id}.safetensors", "scale": scale})
            (side / "applied.json").write_text(json.dumps(order, indent=2))
    return out_dir


def restore_applied(model, pipeline_dir: str | os.PathLike) -> None:
    """Re-attach the patches an exported pipeline carries (its weights already include them)."""
    side = Path(pipeline_dir) / SIDECAR
    if not (side / "applied.json").exists():
        return
    state = _state(model)
    with safe_open(str(side / "base.safetensors"), framework="pt") as f:
        state.base = {k: f.get_tensor(k).to(_parameter(model, k).device) for k in f.keys()}
    for entry in json.loads((side / "applied.json").read_text()):
        state.applied.append((Patch.load(side / entry["file"]), float(entry["scale"])))
