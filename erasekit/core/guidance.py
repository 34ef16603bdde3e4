"""Semantic-guidance terms shared by methods: SEGA-style bottlenecked concept directions.

Δ(c″) = ε(x_t, c″) − ε(x_t, ∅) is the (scaled) guidance toward c″. SEGA keeps only
its largest-magnitude entries: those at or above the κ-th percentile of |Δ|,
taken per sample and channel over the spatial positions as SEGA's reference
code does. All-but-One sums g · β · Δ over its instruction concepts (its δ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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


def percentile_mask(delta: torch.Tensor, kappa: float) -> torch.Tensor:
    """1 where |Δ| is among the top (1 − κ) share of its sample and channel, else 0.

    delta: (B, C, H, W). Exactly ceil((1 − κ)·H·W) entries per (sample, channel) survive when
    magnitudes are distinct.
    """
    b, c = delta.shape[:2]
    flat = delta.abs().reshape(b, c, -1)
    keep = max(1, math.ceil((1.0 - kappa) * flat.shape[-1] - 1e-9))
    threshold = flat.topk(keep, dim=-1).values[..., -1:]
    return (flat >= threshold).to(delta.dtype).reshape(delta.shape)


def bottlenecked_delta(
    eps_uncond: torch.Tensor,
    eps_concepts: torch.Tensor,
    concepts: list[InstructionConcept],
    tau: int,
    t_warmup: int,
) -> torch.Tensor:
    """δ = Σ_c g_c · β_c · (ε(c) − ε(∅)) for the concepts active at step τ.

    eps_concepts: (K, B, C, H, W), one slice per instruction concept, in order.
    """
    delta = torch.zeros_like(eps_uncond)
    for k, concept in enumerate(concepts):
        if not concept.active(tau, t_warmup):
            continue
        direction = eps_concepts[k] - eps_uncond
        delta = delta + concept.guidance * percentile_mask(direction, concept.kappa) * direction
    return delta
