"""Semantic-guidance terms shared by methods: SEGA-style bottlenecked concept directions.

Δ(c″) = ε(x_t, c″) − ε(x_t, ∅) is the (scaled) guidance toward c″. SEGA keeps only
its largest-magnitude entries: those at or above the κ-th percentile of |Δ|,
taken per sample and channel over the spatial positions as SEGA's reference
code does. All-but-One sums g · β · Δ over its instruction concepts (its δ).
"""

from __future__ import annotations

import math

import torch

from erasekit.core.instructions import InstructionConcept


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
