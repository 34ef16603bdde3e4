"""UCE's configuration. Defaults: λ = 0.5, erase and preserve scales 1 (authors' code)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from erasekit.methods.field_help import COMMON

TOKEN_MODES = ("last", "last+eos")


@dataclass
class UceConfig:
    lamb: float = 0.5  # λ: weight on staying close to the old projection
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    tokens: str = "last+eos"  # paper-era code: last word token plus every EOS/padding token after it
    preserve_empty: bool = True  # paper-era code keeps "" (the unconditional prompt) as a preserved concept

    def __post_init__(self) -> None:
        for name in ("lamb", "erase_scale", "preserve_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.lamb == 0 and self.preserve_scale == 0:
            raise ValueError("lamb and preserve_scale cannot both be 0 (the solve would be singular)")
        if self.tokens not in TOKEN_MODES:
            raise ValueError(f"tokens must be one of {TOKEN_MODES}, got {self.tokens!r}")


UceConfig.HELP = COMMON | {
    "lamb": "λ: weight on staying close to the old projection",
    "erase_scale": "weight of the erased concepts' terms",
    "preserve_scale": "weight of the preserved concepts' terms",
    "tokens": "which token positions are edited: last+eos (the paper-era code) or last (the last word token only)",
    "preserve_empty": "keep '' (the unconditional prompt) as a preserved concept (the paper-era code)",
}
