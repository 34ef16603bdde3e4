"""Erasure requests: what to erase and what to map it to, validated before any model loads."""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from erasekit.errors import ErasekitError
from erasekit.yamlfile import read_mapping


@dataclass
class EraseRequest:
    """Target concepts, optional anchors (one shared, or one per concept), concepts to preserve."""

    concepts: list[str]
    anchors: list[str] = field(default_factory=list)
    preserve: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.concepts = [_clean(c, "concept") for c in self.concepts]
        self.anchors = [_clean(a, "anchor", allow_empty=True) for a in self.anchors]
        self.preserve = [_clean(p, "preserve concept") for p in self.preserve]
        if not self.concepts:
            raise ErasekitError("the request names no concept to erase")
        if len(set(self.concepts)) != len(self.concepts):
            raise ErasekitError(f"a concept is named twice in {self.concepts}")
        if self.anchors and len(self.anchors) not in (1, len(self.concepts)):
            raise ErasekitError(
                f"give one anchor for all concepts or one per concept: {len(self.anchors)} anchors "
                f"for {len(self.concepts)} concepts"
            )
        for concept, anchor in zip(self.concepts, self.anchor_list(), strict=True):
            if anchor is not None and anchor == concept:
                raise ErasekitError(f"concept {concept!r} cannot be its own anchor")
        clash = set(self.concepts) & set(self.preserve)
        if clash:
            raise ErasekitError(f"{sorted(clash)[0]!r} is both erased and preserved")

    def anchor_list(self) -> list[str | None]:
        if not self.anchors:
            return [None] * len(self.concepts)
        return self.anchors * len(self.concepts) if len(self.anchors) == 1 else list(self.anchors)

    def check_vocabulary(self, tokenizer) -> None:
        """Every word must map to known tokens (no unknown token) and fit the context length."""
        unk = tokenizer.unk_token_id
        limit = tokenizer.model_max_length - 2
        for text in (*self.concepts, *(a for a in self.anchors if a), *self.preserve):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            if unk is not None and unk in ids and tokenizer.unk_token not in text:
                raise ErasekitError(f"{text!r} contains characters the model's tokenizer does not know")
            if len(ids) > limit:
                raise ErasekitError(f"{text!r} is {len(ids)} tokens, more than the model's {limit}")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> tuple[EraseRequest, dict[str, Any]]:
        """A request file: concepts/anchors/preserve plus optional `method` and `config` keys."""
        data = read_mapping(path, "request")
        unknown = set(data) - {"concepts", "anchors", "preserve", "method", "config"}
        if unknown:
            raise ErasekitError(f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: concepts, anchors, "
                                "preserve, method, config)")
        request = cls(
            concepts=_as_list(data.get("concepts"), "concepts"),
            anchors=_as_list(data.get("anchors"), "anchors"),
            preserve=_as_list(data.get("preserve"), "preserve"),
        )
        extra = {"method": data.get("method"), "config": data.get("config") or {}}
        if not isinstance(extra["config"], dict):
            raise ErasekitError(f"{path}: 'config' must be a mapping")
        return request, extra


def _clean(text: Any, what: str, allow_empty: bool = False) -> str:
    if not isinstance(text, str):
        raise ErasekitError(f"{what} must be text, got {text!r}")
    text = " ".join(text.split())
    if not text and not allow_empty:
        raise ErasekitError(f"{what} must not be empty")
    return text


def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise ErasekitError(f"'{key}' must be a string or a list of strings")


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE strings → {key: text}; build_config types each text against its config field."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ErasekitError(f"bad override {pair!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


_TRUE, _FALSE, _NONE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}, {"none", "null", "~", ""}


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def coerce_value(key: str, text: str, kind: Any) -> Any:
    """A user's text ('2e-4', '.5', 'true', '[a, b]', 'none') typed as the config field `kind` wants.

    YAML alone reads '2e-4' as a string (YAML 1.1 wants '2.0e-4'), so numbers are parsed by Python.
    """
    args = typing.get_args(kind)
    if type(None) in args:  # X | None
        if text.strip().lower() in _NONE:
            return None
        rest = [a for a in args if a is not type(None)]
        kind = rest[0] if len(rest) == 1 else kind
    origin = typing.get_origin(kind) or kind
    word = text.strip()
    try:
        if origin is bool:
            if word.lower() in _TRUE | _FALSE:
                return word.lower() in _TRUE
            raise ValueError
        if origin is int:
            return int(word)
        if origin is float:
            return float(word)
        if origin in (list, dict, tuple):
            value = yaml.safe_load(word)
            if origin is list and isinstance(value, str):
                value = [value]
            if not isinstance(value, list if origin in (list, tuple) else dict):
                raise ValueError
            return value
    except (ValueError, yaml.YAMLError):
        raise ErasekitError(f"{key} must be {_type_name(origin)}, got {text!r}") from None
    return text


def build_config(config_class: type, values: Mapping[str, Any]) -> Any:
    """Instantiate a method's config dataclass from user values, with one-line errors.

    Text values are typed against the field (coerce_value); non-finite numbers are refused.
    """
    from erasekit.registry import suggest

    hints = typing.get_type_hints(config_class)
    names = {f.name for f in dataclasses.fields(config_class)}
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ErasekitError(f"unknown config key {key!r} for {config_class.__name__}{suggest(key, names)}")
        if isinstance(value, str) and hints.get(key) is not str:
            value = coerce_value(key, value, hints.get(key, str))
        if isinstance(value, float) and not math.isfinite(value):
            raise ErasekitError(f"{key} must be a finite number, got {value}")
        typed[key] = value
    try:
        return config_class(**typed)
    except (TypeError, ValueError) as exc:
        raise ErasekitError(f"invalid {config_class.__name__}: {exc}") from exc
