"""ESD's configuration. Defaults: the paper's code (train-esd.py), ESD-x."""

from __future__ import annotations

import math
from dataclasses import dataclass

VARIANTS = {"x": "xattn", "u": "non-xattn", "x-strict": "xattn-kv"}



@dataclass
class EsdConfig:
    variant: str = "x"  # x: cross-attention (ESD-x), u: everything else (ESD-u), x-strict: attn2 to_k/to_v
    steps: int = 1000
    lr: float = 1e-5
    eta: float = 1.0  # negative-guidance strength η
    start_guidance: float = 3.0  # CFG of the student's own sampling of x_t
    sampling_steps: int = 50
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        if self.steps < 1 or self.sampling_steps < 1:
            raise ValueError("steps and sampling_steps must be >= 1")
        for name in ("lr", "eta", "start_guidance"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        if self.lr <= 0:
            raise ValueError("lr must be positive")

    @property
    def scope(self) -> str:
        return VARIANTS[self.variant]
