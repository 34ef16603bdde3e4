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
    """A registered method. Its config and checks import without torch; its erase function (and with it
    torch and diffusers) only when a model is about to be edited."""

    name: str
    package: str  # erasekit.methods.<id>: config.py holds the config class (and checks), method.py erase()
    config_name: str
    summary: str
    needs_anchor: bool = False
    multi_patch: bool = False  # returns one patch per concept (written to a directory)
    check_name: str | None = None  # check(request, config) in config.py: method-specific checks needing no model
    needs: tuple[str, ...] = ()  # family capabilities it relies on (erasekit.core.families.CAPABILITIES)
    config_needs_name: str | None = None  # needs(config) in config.py: what some settings need besides
    # its config's `steps` are shared by the request's concepts (each step trains on one of them), so a joint
    # erase's default steps grow with their number (erasekit.defaults.joint_steps)
    shared_steps: bool = False

    @property
    def config_class(self) -> type:
        return getattr(importlib.import_module(f"{self.package}.config"), self.config_name)

    @property
    def erase(self) -> Callable:  # erase(model, request, config, run) -> Patch
        return importlib.import_module(f"{self.package}.method").erase

    def check_family(self, family, config=None) -> None:
        """Refuse, in one line and before any weights load, a family that lacks what the method (with
        this config, when given) needs."""
        from erasekit.core.families import CAPABILITIES

        needs = self.needs
        if config is not None and self.config_needs_name is not None:
            needs = needs + tuple(getattr(importlib.import_module(f"{self.package}.config"),
                                          self.config_needs_name)(config))
        scope = getattr(config, "scope", None)
        if scope is not None and scope not in family.scopes:
            raise ErasekitError(f"method {self.name!r} cannot train scope {scope!r} on {family.name} models "
                                f"(their scopes: {', '.join(sorted(family.scopes))})")
        if getattr(config, "robust", False) and "embedding" not in family.scopes:
            # the adversary's prefix is set in the first tokenizer's token tables (core.robust)
            raise ErasekitError(f"robust erasure sets an adversarial prefix in the first tokenizer's token "
                                f"embeddings, which {family.name} models do not read their sequence from")
        for need in needs:
            if need not in family.capabilities:
                raise ErasekitError(f"method {self.name!r} cannot run on {family.name} models: it needs "
                                    f"{CAPABILITIES[need]}, which they do not have")

    def check_request(self, request, config=None) -> None:
        """Method-specific request checks that need no model (run before any weights load)."""
        if self.needs_anchor and (not request.anchors or not all(request.anchor_list())):
            raise ErasekitError(f"method {self.name!r} needs an anchor concept: give --anchor (one, or one "
                                "per concept)")
        if self.check_name is not None and config is not None:
            getattr(importlib.import_module(f"{self.package}.config"), self.check_name)(request, config)


_METHODS: dict[str, MethodSpec] = {}
_LOADED = False


def register_method(
    name: str,
    package: str,
    config: str,
    summary: str,
    needs_anchor: bool = False,
    multi_patch: bool = False,
    check: str | None = None,
    needs: Iterable[str] = (),
    config_needs: str | None = None,
    shared_steps: bool = False,
) -> None:
    """One line in a method package's __init__.py: `register_method("abo", __name__, "AboConfig", "...")`.

    config (and check) name objects of the package's config.py; its method.py defines erase().
    """
    spec = MethodSpec(name=name, package=package, config_name=config, summary=summary, needs_anchor=needs_anchor,
                      multi_patch=multi_patch, check_name=check, needs=tuple(needs),
                      config_needs_name=config_needs, shared_steps=shared_steps)
    if name in _METHODS and _METHODS[name] != spec:
        raise ValueError(f"method {name!r} registered twice")
    _METHODS[name] = spec


def _load_builtin_methods() -> None:
    """Import every package under erasekit.methods once (not its method.py); each registers itself."""
    global _LOADED
    if _LOADED:
        return
    import erasekit.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg:
            importlib.import_module(f"{pkg.__name__}.{info.name}")
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
