"""Running part of a DDIM trajectory with a method's own ε̂ (teacher or student), no gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch

from erasekit.core.model import DiffusionModel

# eps_fn(x, timestep, index) -> ε̂ to step with (guidance, δ, ... already composed)
EpsFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def timesteps_for(model: DiffusionModel, steps: int) -> torch.Tensor:
    """The scheduler's DDIM timesteps for `steps` steps (index 0 = the noisiest)."""
    model.scheduler.set_timesteps(steps, device=model.device)
    return model.scheduler.timesteps


def initial_latents(model: DiffusionModel, gen: torch.Generator, batch: int = 1) -> torch.Tensor:
    """x_T drawn from the caller's generator (so checkpointed training replays it)."""
    x = torch.randn((batch, *model.latent_shape), generator=gen)
    return x.to(model.device, model.dtype) * model.scheduler.init_noise_sigma


@torch.no_grad()
def run_ddim(model: DiffusionModel, x: torch.Tensor, timesteps: torch.Tensor, n_steps: int, eps_fn: EpsFn
             ) -> torch.Tensor:
    """Take the first `n_steps` DDIM (η = 0) steps from x; returns x at timesteps[n_steps]."""
    for i in range(n_steps):
        x = model.scheduler.step(eps_fn(x, timesteps[i], i), timesteps[i], x, eta=0.0).prev_sample
    return x
