"""The flow-matching sampler on velocity fields whose ODE solution is known."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from erasekit.core.flow import FlowMatchSampler


class FieldModel:
    """A stand-in denoiser: velocity `field(x, σ, cond)` for every condition, as DiffusionModel.eps batches."""

    device = torch.device("cpu")

    def __init__(self, field):
        from erasekit.core.families import get_family

        self.family = get_family("sd3")  # flow matching, classifier-free guidance, the steps alone set timesteps
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
        self.field = field
        self.calls: list[float] = []

    def eps(self, x, t, cond, weights=None):
        sigma = float(torch.as_tensor(t).reshape(-1)[0]) / 1000
        self.calls.append(sigma)
        return torch.stack([self.field(x, sigma, c) for c in cond])


def smooth(x, sigma, c):
    return 0.4 * x * math.cos(sigma) + c.mean()


@pytest.fixture
def start():
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def test_a_constant_velocity_moves_the_latent_by_its_integral(start):
    # dx/dσ = c from σ = 1 to 0: x_0 = x_1 − c, exactly, for Euler steps on any schedule.
    model = FieldModel(lambda x, s, c: torch.full_like(x, 0.5))
    cond = torch.zeros(2, 3, 5)
    out = FlowMatchSampler(model, steps=7, guidance=1.0).sample(start, cond, cond)
    torch.testing.assert_close(out.latents, start - 0.5, atol=1e-5, rtol=0)


def test_guidance_composes_velocities_like_eps(start):
    model = FieldModel(lambda x, s, c: torch.full_like(x, float(c.mean())))
    cond, uncond = torch.ones(2, 3, 5), torch.zeros(2, 3, 5)
    out = FlowMatchSampler(model, steps=4, guidance=3.0).sample(start, cond, uncond)
    torch.testing.assert_close(out.latents, start - 3.0, atol=1e-5, rtol=0)  # v = 0 + 3·(1 − 0)


def test_sampling_is_deterministic_and_inversion_returns_to_the_start(start):
    cond = torch.full((2, 3, 5), 0.1)
    errors = []
    for steps in (25, 100):
        sampler = FlowMatchSampler(FieldModel(smooth), steps=steps, guidance=1.0)
        x0 = sampler.sample(start, cond, cond).latents
        torch.testing.assert_close(sampler.sample(start, cond, cond).latents, x0, atol=0, rtol=0)
        back = sampler.invert(x0, cond).latents
        errors.append(float((back - start).norm() / start.norm()))
    assert errors[0] < 0.05 and errors[1] < errors[0] / 2  # first-order: the Euler error shrinks with the step


def test_partial_inversion_continues_into_sampling(start):
    cond = torch.full((2, 3, 5), 0.1)
    model = FieldModel(smooth)
    sampler = FlowMatchSampler(model, steps=50, guidance=1.0)
    x0 = sampler.sample(start, cond, cond).latents
    mid = sampler.invert(x0, cond, stop_at=20)
    assert len(mid.timesteps) == 20 and mid.timesteps == sorted(mid.timesteps)  # from σ = 0 upwards
    again = sampler.sample(mid.latents, cond, cond, start_at=50 - 20).latents
    assert float((again - x0).norm() / x0.norm()) < 0.02


def test_the_scheduler_picks_the_sampler(tiny_model):
    from erasekit.core.sampler import DDIMSampler, make_sampler

    assert isinstance(make_sampler(FieldModel(smooth), 4, 1.0), FlowMatchSampler)
    assert isinstance(make_sampler(tiny_model, 4, 1.0), DDIMSampler)
