"""Score composition and the DDIM sampler (η = 0) shared by every method and the evaluation.

Hooks see every step: `on_latent` may steer x_t before the UNet call, `on_eps`
may read or replace the (guided) ε before the scheduler step. DDIM inversion
runs the same model through diffusers' DDIMInverseScheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from diffusers import DDIMInverseScheduler
from tqdm.auto import tqdm

from erasekit.core.model import DiffusionModel
from erasekit.core.schedule import Schedule


def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ε(∅) + s·(ε(c) − ε(∅))."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def guidance_term(eps_uncond: torch.Tensor, eps_cond: torch.Tensor) -> torch.Tensor:
    """The conditional part of the score, ε(c) − ε(∅) (∝ −∇ log p(c | x_t))."""
    return eps_cond - eps_uncond


@dataclass
class StepContext:
    """The state a hook sees at one sampling step; hooks may replace `latents` or `eps`."""

    index: int
    timestep: torch.Tensor
    latents: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    eps: torch.Tensor | None = None
    eps_cond: torch.Tensor | None = None
    eps_uncond: torch.Tensor | None = None


class StepHook:
    """Base class of per-step hooks; override what you need."""

    def on_latent(self, ctx: StepContext) -> None:  # noqa: B027 - optional override
        pass

    def on_eps(self, ctx: StepContext) -> None:  # noqa: B027 - optional override
        pass


@dataclass
class SampleResult:
    latents: torch.Tensor
    timesteps: list[int]
    trajectory: list[torch.Tensor] = field(default_factory=list)  # x_T, x_{t_1}, ..., x_0 when requested


class DDIMSampler:
    def __init__(
        self,
        model: DiffusionModel,
        steps: int = 50,
        guidance: float = 7.5,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """weights: UNet tensors replacing the live ones while sampling (a frozen teacher)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.model = model
        self.steps = steps
        self.guidance = guidance
        self.weights = weights

    def timesteps(self) -> torch.Tensor:
        return Schedule(self.model, self.steps).timesteps

    def _eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor):
        if self.guidance == 1.0:
            eps_c = self.model.eps(x, t, cond[None], self.weights)[0]
            return eps_c, eps_c, None
        both = self.model.eps(x, t, torch.stack([uncond, cond]), self.weights)
        return guided_eps(both[0], both[1], self.guidance), both[1], both[0]

    def sample(
        self,
        x_T: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        hooks: Sequence[StepHook] = (),
        return_trajectory: bool = False,
        stop_at: int | None = None,
        progress: bool = False,
        start_at: int = 0,
    ) -> SampleResult:
        """Denoise x_T under per-sample conditions cond/uncond (B, L, D).

        stop_at: return after that many steps (x_t of an intermediate timestep), for methods that
        train on points of the teacher's trajectory.
        start_at: skip that many steps: x_T is then the latent at timesteps()[start_at] (a partial
        inversion's end point).
        """
        schedule = Schedule(self.model, self.steps)
        timesteps = schedule.timesteps
        n = len(timesteps) if stop_at is None else stop_at
        x = x_T
        trajectory = [x] if return_trajectory else []
        for i, t in enumerate(tqdm(timesteps[start_at:n], desc="sampling", disable=not progress, leave=False),
                              start=start_at):
            ctx = StepContext(index=i, timestep=t, latents=x, cond=cond, uncond=uncond)
            for hook in hooks:
                hook.on_latent(ctx)
            ctx.eps, ctx.eps_cond, ctx.eps_uncond = self._eps(ctx.latents, t, ctx.cond, ctx.uncond)
            for hook in hooks:
                hook.on_eps(ctx)
            x = schedule.step(ctx.eps, i, ctx.latents)
            if return_trajectory:
                trajectory.append(x)
        return SampleResult(latents=x, timesteps=[t.item() for t in timesteps[start_at:n]], trajectory=trajectory)

    def invert(self, latents: torch.Tensor, cond: torch.Tensor, return_trajectory: bool = False,
               stop_at: int | None = None) -> SampleResult:
        """DDIM inversion x_0 → x_T with the conditional ε (no guidance, as in DDIM inversion).

        stop_at: invert only that many steps; `sample(..., start_at=steps - stop_at)` continues from there.
        """
        inverse = DDIMInverseScheduler.from_config(self.model.scheduler.config)
        inverse.set_timesteps(self.steps, device=self.model.device)
        x = latents
        trajectory = [x] if return_trajectory else []
        for t in inverse.timesteps[:stop_at]:
            eps = self.model.eps(x, t, cond[None], self.weights)[0]
            x = inverse.step(eps, t, x).prev_sample
            if return_trajectory:
                trajectory.append(x)
        return SampleResult(latents=x, timesteps=[int(t) for t in inverse.timesteps[:stop_at]],
                            trajectory=trajectory)


def make_sampler(model: DiffusionModel, steps: int, guidance: float,
                 weights: dict[str, torch.Tensor] | None = None):
    """The sampler of the model's scheduler: DDIM (η = 0) for a DDPM-type schedule, flow-matching Euler
    (erasekit.core.flow) for SD3 / Flux; both share one interface (sample, invert, hooks)."""
    from erasekit.core.noising import is_flow_matching

    if is_flow_matching(model.scheduler):
        from erasekit.core.flow import FlowMatchSampler

        return FlowMatchSampler(model, steps=steps, guidance=guidance, weights=weights)
    return DDIMSampler(model, steps=steps, guidance=guidance, weights=weights)


@torch.no_grad()
def generate_images(
    model: DiffusionModel,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str = "",
    batch_size: int = 16,
    hooks: Sequence[StepHook] = (),
    progress: bool = True,
) -> torch.Tensor:
    """Images in [0, 1] (N, 3, H, W) for the pairs (prompts[i], seeds[i]), batched, seed-deterministic."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    sampler = make_sampler(model, steps, guidance)
    uncond_one = model.encode([negative_prompt])[0]
    out = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generating", disable=not progress, unit="batch"):
        batch_prompts = list(prompts[start : start + batch_size])
        cond = model.encode(batch_prompts)
        uncond = uncond_one.expand_as(cond)
        x_T = model.initial_noise(seeds[start : start + batch_size])
        result = sampler.sample(x_T, cond, uncond, hooks=hooks)
        out.append(model.decode(result.latents).cpu())
    return torch.cat(out) if out else torch.empty(0)
