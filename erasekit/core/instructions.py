"""All-but-One's instruction concepts (the terms of its explicit δ): plain data, no torch, so that
configs holding them validate before anything heavy loads."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class InstructionConcept:
    """One term of δ: a text, its signed guidance g, the sampling-step window and κ.

    Steps count down as in All-but-One's Algorithm 1: τ = T is pure noise, τ = 1 the last step.
    The term is active for t_high ≤ τ ≤ t_low (and τ ≥ t_warmup of the whole δ).
    """

    text: str
    guidance: float
    t_high: int
    t_low: int
    kappa: float = 0.95

    def validate(self, total_steps: int) -> None:
        if not self.text.strip():
            raise ValueError("instruction concept text must not be empty")
        if not math.isfinite(self.guidance):
            raise ValueError(f"guidance of {self.text!r} must be finite, got {self.guidance}")
        if not 0.0 < self.kappa < 1.0:
            raise ValueError(f"kappa of {self.text!r} must lie in (0, 1), got {self.kappa}")
        if not 0 <= self.t_high <= self.t_low <= total_steps:
            raise ValueError(
                f"window of {self.text!r} must satisfy 0 <= t_high <= t_low <= T={total_steps}, "
                f"got [{self.t_high}, {self.t_low}]"
            )

    def active(self, tau: int, t_warmup: int) -> bool:
        return self.t_high <= tau <= self.t_low and tau >= t_warmup
