"""Running part of a sampling trajectory with a method's own prediction (teacher or student), no
gradients: DDIM steps on a DDPM-type schedule, Euler steps on a flow-matching one (core.schedule)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from erasekit.core.model import DiffusionModel
from erasekit.core.schedule import Schedule

# eps_fn(x, timestep, index) -> the prediction to step with (ε or v; guidance, δ, ... already composed)
EpsFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def initial_latents(model: DiffusionModel, gen: torch.Generator, batch: int = 1) -> torch.Tensor:
    """x_T drawn from the caller's generator (so checkpointed training replays it)."""
    x = torch.randn((batch, *model.latent_shape), generator=gen)
    return x.to(model.device) * float(getattr(model.scheduler, "init_noise_sigma", 1.0))


@torch.no_grad()
def run_steps(schedule: Schedule, x: torch.Tensor, n_steps: int, eps_fn: EpsFn) -> torch.Tensor:
    """Take the first `n_steps` steps of the schedule from x; returns x at schedule.timesteps[n_steps]."""
    for i in range(n_steps):
        x = schedule.step(eps_fn(x, schedule.timesteps[i], i), i, x)
    return x


# step_fn(x, timestep, index, rows) -> (ε̂ to step with, *records): what to keep at every timestep
# (e.g. a teacher's guidance target and ε(∅)); rows: which pool entries x holds (e.g. their concept).
StepFn = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, ...]]


class TrajectoryPool:
    """Trajectories of a frozen model drawn in batches with every timestep kept, and training examples
    (trajectory, index) drawn from them.

    Pool r (the one used for steps r·refresh … (r+1)·refresh − 1) is a pure function of (seed, r), so a
    run resumed from a checkpoint rebuilds the very pool it had; the examples are drawn from the
    trainer's generator, which the checkpoint holds. size = refresh = batch = 1 is the reference
    algorithms' one fresh trajectory per step. A pool holds at least one trajectory per group (e.g. per
    concept erased), so that erasing more concepts than `size` still trains on every one of them.
    """

    def __init__(self, model: DiffusionModel, schedule: Schedule, step_fn: StepFn, size: int, refresh: int,
                 seed: int, n_groups: int = 1, chunk: int = 64) -> None:
        self.model, self.schedule, self.timesteps, self.step_fn = model, schedule, schedule.timesteps, step_fn
        size = max(size, n_groups)
        self.size, self.refresh, self.seed, self.n_groups, self.chunk = size, refresh, seed, n_groups, chunk
        self._built: int | None = None
        self.records: list[torch.Tensor] = []  # each (size, T, ...): the step_fn records at every index
        self.latents: torch.Tensor | None = None  # (size, T, C, H, W): x at every index before its step
        self.groups = torch.arange(size) % n_groups  # entry i belongs to group i mod n_groups (e.g. concept)

    @torch.no_grad()
    def _build(self, r: int, n_steps: int) -> None:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + r)
        latents, records = [], []
        for start in range(0, self.size, self.chunk):
            rows = self.groups[start : start + self.chunk]
            x = initial_latents(self.model, gen, len(rows))
            xs, recs = [], []
            for i in range(n_steps):
                eps, *kept = self.step_fn(x, self.timesteps[i], i, rows)
                xs.append(x)
                recs.append(kept)
                x = self.schedule.step(eps, i, x)
            latents.append(torch.stack(xs, dim=1))
            records.append([torch.stack([r_[j] for r_ in recs], dim=1) for j in range(len(recs[0]))])
        self.latents = torch.cat(latents)
        self.records = [torch.cat([chunk[j] for chunk in records]) for j in range(len(records[0]))]
        self._built = r

    def draw(self, step: int, gen: torch.Generator, batch: int, low: int = 0, high: int | None = None):
        """(entries, indices, x at those indices, records there) for `batch` examples with index in
        [low, high): entries uniform over the pool, indices uniform in the window."""
        high = len(self.timesteps) if high is None else high
        entries = torch.randint(self.size, (batch,), generator=gen)
        indices = torch.randint(low, high, (batch,), generator=gen)
        r = step // self.refresh
        if self._built != r:
            # A pool used for one step only needs its trajectories down to the deepest index drawn.
            self._build(r, int(indices.max()) + 1 if self.refresh == 1 else len(self.timesteps))
        return (entries, indices, self.latents[entries, indices],
                [rec[entries, indices] for rec in self.records])
