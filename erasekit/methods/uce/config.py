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
    # robust erasure for a closed form: RECE's iteration (find the embedding the edited projections still map
    # to the concept's old keys / values, erase it in closed form, repeat); RECE's nudity setting: 3 epochs, λ 0.1
    robust: bool = False
    robust_epochs: int = 3
    robust_lambda: float = 0.1

    def __post_init__(self) -> None:
        for name in ("lamb", "erase_scale", "preserve_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.lamb == 0 and self.preserve_scale == 0:
            raise ValueError("lamb and preserve_scale cannot both be 0 (the solve would be singular)")
        if self.robust_epochs < 1 or not math.isfinite(self.robust_lambda) or self.robust_lambda <= 0:
            raise ValueError("robust_epochs must be >= 1 and robust_lambda a positive finite number")
        if self.tokens not in TOKEN_MODES:
            raise ValueError(f"tokens must be one of {TOKEN_MODES}, got {self.tokens!r}")


UceConfig.HELP = COMMON | {
    "lamb": "λ: weight on staying close to the old projection",
    "erase_scale": "weight of the erased concepts' terms",
    "preserve_scale": "weight of the preserved concepts' terms",
    "tokens": "which token positions are edited: last+eos (the paper-era code) or last (the last word token only)",
    "preserve_empty": "keep '' (the unconditional prompt) as a preserved concept (the paper-era code)",
    "robust": "robust erasure: RECE's iteration of adversarial embedding + closed-form erasure after the UCE edit",
    "robust_epochs": "RECE epochs: each finds the embedding that recovers the concept and erases it",
    "robust_lambda": "λ of RECE's adversarial embedding (its regular_scale): larger keeps c' nearer 0",
}
