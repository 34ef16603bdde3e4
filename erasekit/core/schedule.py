"""One deterministic sampling step between a scheduler's timesteps, whatever the scheduler's kind.

A DDPM-type schedule steps with DDIM (η = 0) on the model's prediction (ε or v, as the scheduler's
prediction_type says); a flow-matching schedule (SD3, Flux) takes the Euler step x ← x + (σ_next − σ)·v
on its sigmas, shift included, exactly what FlowMatchEulerDiscreteScheduler.step does without churn.
The schedule holds its own copy of the scheduler, so other sampling in between (a timeline
evaluation with another step count) cannot move a trajectory's timesteps under it.
"""

from __future__ import annotations

import torch

from erasekit.core.noising import is_flow_matching


class Schedule:
    """The `steps` timesteps of the model's scheduler (index 0 = the noisiest) and the step between them."""

    def __init__(self, model, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.flow = is_flow_matching(model.scheduler)
        self.scheduler = type(model.scheduler).from_config(model.scheduler.config)
        options = model.family.timestep_options
        if options is None:
            self.scheduler.set_timesteps(steps, device=model.device)
        else:
            self.scheduler.set_timesteps(device=model.device, **options(model.pipe, steps, model.latent_shape))
        self.timesteps: torch.Tensor = self.scheduler.timesteps
        self.sigmas = self.scheduler.sigmas.to(torch.float32) if self.flow else None

    def step(self, prediction: torch.Tensor, index: int, x: torch.Tensor) -> torch.Tensor:
        """x at timesteps[index + 1] (or the clean end) from x at timesteps[index] and the model's prediction."""
        if self.flow:
            return x.float() + (self.sigmas[index + 1] - self.sigmas[index]) * prediction.float()
        return self.scheduler.step(prediction, self.timesteps[index], x, eta=0.0).prev_sample
