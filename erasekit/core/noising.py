"""The forward process q(x_t | x_0) and the training target, from the model's scheduler.

One place for what every noise-target method, attack and the toy-world trainer needs, so that a
v-prediction model (SD 2.x 768) trains towards v = α_t·ε − σ_t·x_0 instead of silently towards ε,
and a flow-matching model (SD3, Flux) towards the velocity ε − x_0 of x_σ = (1 − σ)·x_0 + σ·ε.
For a flow-matching scheduler a timestep t is σ·num_train_timesteps, the value its denoiser reads
(so a method drawing t uniformly draws σ uniformly; SD3's own training draws a shifted logit-normal σ).
"""

from __future__ import annotations

import torch

from erasekit.errors import ErasekitError


def is_flow_matching(scheduler) -> bool:
    """Whether the scheduler integrates a flow-matching ODE (no ᾱ schedule, no prediction_type)."""
    return not hasattr(scheduler, "alphas_cumprod") and hasattr(scheduler, "sigmas")


def _flow_sigma(scheduler, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    sigma = t.to(x0.device, torch.float32) / scheduler.config.num_train_timesteps
    return sigma.view(-1, *([1] * (x0.dim() - 1)))


def add_noise(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (the scheduler's own add_noise), or (1 − σ)·x_0 + σ·ε."""
    if is_flow_matching(scheduler):
        sigma = _flow_sigma(scheduler, x0, t)
        return (1 - sigma) * x0 + sigma * noise
    return scheduler.add_noise(x0, noise, t.to(x0.device))


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the denoiser should output at x_t: ε, v (scheduler.get_velocity) or x_0, by prediction_type;
    the velocity ε − x_0 for a flow-matching scheduler."""
    if is_flow_matching(scheduler):
        return noise - x0
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t.to(x0.device))
    if kind == "sample":
        return x0
    raise ErasekitError(f"unsupported prediction_type {kind!r} (epsilon, v_prediction or sample)")


def noised(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, training target) for clean latents x0, noise ε and integer timesteps t."""
    return add_noise(scheduler, x0, noise, t), training_target(scheduler, x0, noise, t)


def snr(scheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at integer timesteps t."""
    a = scheduler.alphas_cumprod.to(t.device)[t]
    return a / (1 - a)


def min_snr_weight(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023) for the scheduler's prediction type."""
    s = snr(scheduler, t)
    clipped = torch.clamp(s, max=gamma)
    return clipped / (s + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / s
