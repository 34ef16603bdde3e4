"""The flow-matching sampler (SD3, Flux) beside DDIM, with DDIMSampler's interface.

A flow-matching model predicts the velocity v = dx/dσ of x_σ = (1 − σ)·x_0 + σ·ε; sampling integrates
the ODE from σ = 1 (noise) down to σ = 0 on the sigmas of diffusers' FlowMatchEulerDiscreteScheduler
(its shift included) with Euler steps, x ← x + (σ_next − σ)·v, exactly what the scheduler's own step
does without churn. Inversion integrates the same ODE upwards, taking each step's velocity at its
lower-noise end (as DDIM inversion does), so it returns to the start latent up to the Euler error,
which shrinks with the step size. Guidance composes velocities like ε (v(∅) + s·(v(c) − v(∅))).
"""

from __future__ import annotations

import dataclasses

import torch

from erasekit.core.sampler import DDIMSampler, SampleResult
from erasekit.core.schedule import Schedule


def with_embedded_guidance(cond, scale: float):
    """The conditioning with its guidance embedding input set to `scale` (when the denoiser takes one)."""
    if "guidance" not in cond.extras:
        return cond
    guidance = torch.full_like(cond.extras["guidance"], scale)
    return dataclasses.replace(cond, extras={**cond.extras, "guidance": guidance})


class FlowMatchSampler(DDIMSampler):
    """The same sampling loop as DDIMSampler (core.schedule takes the Euler step); what differs is the
    guidance of guidance-distilled models and the inversion."""

    def __init__(self, model, steps: int = 28, guidance: float = 7.0,
                 weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(model, steps=steps, guidance=guidance, weights=weights)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, cond, uncond):
        if not self.model.family.cfg:  # guidance-distilled (Flux): the scale is an input of one pass
            v = self.model.eps(x, t, with_embedded_guidance(cond, self.guidance)[None], self.weights)[0]
            return v, v, None
        return super()._eps(x, t, cond, uncond)

    def invert(self, latents: torch.Tensor, cond, return_trajectory: bool = False,
               stop_at: int | None = None) -> SampleResult:
        """x_0 → x_1 with the conditional velocity (no guidance); stop_at: only that many steps, so that
        `sample(..., start_at=steps - stop_at)` continues from there."""
        schedule = Schedule(self.model, self.steps)
        timesteps, sigmas = schedule.timesteps, schedule.sigmas
        num_train = self.model.scheduler.config.num_train_timesteps
        n = len(timesteps)
        x = latents.float()
        trajectory = [x] if return_trajectory else []
        done = []
        for j in range(n - 1, n - 1 - (n if stop_at is None else stop_at), -1):
            low = sigmas[j + 1]  # this step's lower-noise end, where x is now
            t = low * num_train
            v = self.model.eps(x, t.to(x.device), cond[None], self.weights)[0]
            x = x + (sigmas[j] - low) * v.float()
            done.append(float(t))
            if return_trajectory:
                trajectory.append(x)
        return SampleResult(latents=x, timesteps=done, trajectory=trajectory)
