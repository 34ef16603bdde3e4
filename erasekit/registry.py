"""The method registry: filled by `register_method`, read lazily, with "did you mean"."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from erasekit.errors import ErasekitError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_class: type
    erase: Callable  # erase(model, request, config, run) -> Patch
    summary: str
    needs_anchor: bool = False
    multi_patch: bool = False  # returns one patch per concept (written to a directory)
    check: Callable | None = None  # check(request, config): method-specific checks needing no model

    def check_request(self, request, config=None) -> None:
        """Method-specific request checks that need no model (run before any weights load)."""
        if self.needs_anchor and (not request.anchors or not all(request.anchor_list())):
            raise ErasekitError(f"method {self.name!r} needs an anchor concept: give --anchor (one, or one "
                                "per concept)")
        if self.check is not None and config is not None:
            self.check(request, config)


_METHODS: dict[str, MethodSpec] = {}
_LOADED = False


def register_method(
    name: str,
    config_class: type,
    summary: str,
    needs_anchor: bool = False,
    multi_patch: bool = False,
    check: Callable | None = None,
) -> Callable[[Callable], Callable]:
    """Decorator: `@register_method("abo", AboConfig, "...")` above a method's erase function."""

    def wrap(fn: Callable) -> Callable:
        if name in _METHODS and _METHODS[name].erase is not fn:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = MethodSpec(name=name, config_class=config_class, erase=fn, summary=summary,
                                    needs_anchor=needs_anchor, multi_patch=multi_patch, check=check)
        return fn

    return wrap


def _load_builtin_methods() -> None:
    """Import every package under erasekit.methods once; each registers itself on import."""
    global _LOADED
    if _LOADED:
        return
    import erasekit.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg:
            importlib.import_module(f"{pkg.__name__}.{info.name}.method")
    _LOADED = True


def suggest(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean ...?)' suffix for an unknown name, or the list of valid names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (choose from: {', '.join(choices)})" if choices else " (none available)"


def get_method(name: str) -> MethodSpec:
    _load_builtin_methods()
    if name not in _METHODS:
        raise ErasekitError(f"unknown method {name!r}{suggest(name, _METHODS)}")
    return _METHODS[name]


def list_methods() -> list[MethodSpec]:
    _load_builtin_methods()
    return [_METHODS[k] for k in sorted(_METHODS)]
