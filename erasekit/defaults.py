"""Method configs in layers: the paper's defaults, the model family's, the model's own, the joint erase's
steps, the request's, then `--set`.

Every entry point (api.erase, the CLI, the demo, the benchmarks) resolves a config here and nowhere
else, and the patch records, for every field, which layer its value came from.

The family layer comes from the family adapter (erasekit.core.families: e.g. SDXL samples its
training images at guidance 5). A model's own layer comes from its *profile*: today the built-in
toy worlds ('toyworld'). A model with neither gets the paper's defaults.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erasekit.core.sources import TOYWORLD_VARIANTS

PAPER = "paper"
# profile name -> module with method_defaults(method, concepts, requested, family) -> dict
PROFILES: dict[str, str] = {"toyworld": "erasekit.toyworld.defaults"}
# A method whose steps the concepts share trains each of N concepts on 1/N of them; with the default
# exponent 1 a joint erase gets N × the steps, so each concept sees what a single-concept erase gives it.
# A profile may set its own, calibrated exponent (joint_steps_exponent).
JOINT_STEPS_EXPONENT = 1.0
JOINT_LAYER = "joint"  # its layer's name in the config's sources: "joint:<N> concepts"


@dataclass
class ResolvedConfig:
    """A method's validated config and, per field, the layer its value came from."""

    config: Any
    sources: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, Any, str]]:
        """(field, value, layer) for every field of the config: the method's own fields first, then those
        it shares through option mixins (pool, robust erasure)."""
        values = dataclasses.asdict(self.config)
        own = set(vars(type(self.config)).get("__annotations__", {}))
        ordered = sorted(values, key=lambda name: name not in own)
        return [(name, values[name], self.sources.get(name, PAPER)) for name in ordered]


def profile_of(source: str | os.PathLike | None) -> str | None:
    """The defaults profile of a model argument, decided without loading it ('toyworld' or None).

    A toy world is a built-in name, or a directory `erasekit toyworld train` wrote (its training.json).
    """
    if source is None:
        return None
    text = str(source)
    if text in TOYWORLD_VARIANTS:
        return "toyworld"
    record = Path(text).expanduser() / "training.json"
    try:
        return "toyworld" if record.is_file() and "stages" in json.loads(record.read_text()) else None
    except (OSError, ValueError):
        return None


def family_name_of(source: str | os.PathLike | None) -> str | None:
    """The model family of a model argument, from its files (model_index.json), before it loads."""
    if source is None:
        return None
    from erasekit.core.families import family_of
    from erasekit.core.sources import resolve_source

    return family_of(resolve_source(source)).name


def model_layer(profile: str | None, method: str, concepts: Sequence[str], requested: Mapping[str, Any],
                family: str | None = None) -> dict[str, Any]:
    """The model's own defaults for a method (empty for an unknown profile). A profile that spans families
    (the toy worlds: a UNet and an MMDiT) may set values per family."""
    if profile is None:
        return {}
    module = importlib.import_module(PROFILES[profile])
    return dict(module.method_defaults(method, concepts, requested, family=family))


def family_layer(family: str | None, method: str) -> dict[str, Any]:
    """The model family's defaults for a method (empty for no family)."""
    if family is None:
        return {}
    from erasekit.core.families import get_family

    return dict(get_family(family).method_defaults.get(method, {}))


def resolve_config(method: str, profile: str | None, request, config: Mapping[str, Any] | None = None,
                   overrides: Mapping[str, Any] | None = None, family: str | None = None) -> ResolvedConfig:
    """The config `api.erase` runs: paper < the family's < the model profile's defaults < config (the
    request's) < overrides (`--set`)."""
    layers = [("request", dict(config or {})), ("set", dict(overrides or {}))]
    return resolve(method, profile, request.concepts, [(n, v) for n, v in layers if v], family=family)


def resolve(method: str, profile: str | None, concepts: Sequence[str],
            layers: Sequence[tuple[str, Mapping[str, Any]]] = (), family: str | None = None) -> ResolvedConfig:
    """The method's config from paper < family < model < the given (name, values) layers, in that order.

    A value the user gives as text ('2e-4' in YAML or `--set`) is typed against the config field.
    """
    from erasekit.registry import get_method
    from erasekit.request import build_config

    info = get_method(method)
    requested: dict[str, Any] = {}
    for _, values in layers:
        requested.update(values)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def apply(name: str, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            merged[key] = value
            sources[key.replace("-", "_")] = name

    apply(f"family:{family}", family_layer(family, method))
    apply(f"model:{profile}", model_layer(profile, method, concepts, requested, family))
    if info.shared_steps and len(concepts) > 1:
        apply(f"{JOINT_LAYER}:{len(concepts)} concepts", {"steps": joint_steps(info, profile, merged, len(concepts))})
    for name, values in layers:
        apply(name, values)
    config = build_config(info.config_class, merged)
    return ResolvedConfig(config, sources)


def joint_steps(info, profile: str | None, merged: Mapping[str, Any], n_concepts: int) -> int:
    """The steps a joint erase of `n_concepts` gets by default: one concept's (the layers so far) times
    N ** the profile's exponent for the method (JOINT_STEPS_EXPONENT where it sets none)."""
    one = int(merged.get("steps", info.config_class.__dataclass_fields__["steps"].default))
    finder = _profile_hook(profile, "joint_steps_exponent")
    exponent = finder(info.name) if finder else None
    return max(one, round(one * n_concepts ** (JOINT_STEPS_EXPONENT if exponent is None else exponent)))


def check_suite(profile: str | None, concept: str) -> str | None:
    """A suite whose detector measures `concept` on this model profile (None: the profile has none)."""
    finder = _profile_hook(profile, "check_suite")
    return finder(concept) if finder else None


def _profile_hook(profile: str | None, name: str):
    """The optional function `name` of a profile's defaults module (None: no profile, or it has none)."""
    return None if profile is None else getattr(importlib.import_module(PROFILES[profile]), name, None)
