"""Model families: where everything that differs between SD, SDXL, SD3 and Flux lives.

A family is registered once (one module per family under this package) and found by name or by a
pipeline directory's `model_index.json`; nothing else tests a family's name. The records here are
plain data, so that `erasekit ls families` answers without importing diffusers.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from erasekit.errors import ErasekitError


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    pipeline: str  # the diffusers pipeline class that loads it
    class_names: tuple[str, ...]  # model_index.json `_class_name`s that are this family's
    components: tuple[str, ...]  # trainable components: the prefixes of parameter names and patches
    native_resolution: int

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


def family_of(source: str | os.PathLike) -> Family:
    """The family of a pipeline directory (its model_index.json `_class_name`); the default family for a
    hub id or a single file. A directory of a pipeline no family serves is one clear error."""
    _load()
    index = Path(source) / "model_index.json"
    if not index.is_file():
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
