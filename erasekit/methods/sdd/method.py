"""SDD: the student's ε(z_t, c_s) learns its own stop-gradient ε(z_t, ∅); the EMA teacher is the result.

z_t comes from u ~ U{0..T−1} DDIM steps with CFG on c_p (all concepts joined by ", ") of the EMA
teacher (`sample_from="teacher"`, the authors' code and our default) or of the frozen base
(`"base"`: trajectories that do not move with training, pooled as core.trajectory.TrajectoryPool
draws them); c_s cycles through the concepts. The saved weights are the EMA teacher's, as in the
authors' code. Difference: u = 0 starts from x_T (the authors' code samples all
the way to x_0 in that case, a bug we do not reproduce).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from erasekit.core import robust
from erasekit.core.distributed import share
from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.patch import Patch
from erasekit.core.sampler import guided_eps
from erasekit.core.schedule import Schedule
from erasekit.core.trainer import TrainerConfig
from erasekit.core.trajectory import TrajectoryPool, initial_latents, run_steps
from erasekit.methods.sdd.config import SddConfig
from erasekit.request import EraseRequest


def sdd_loss(student_cond: torch.Tensor, student_uncond: torch.Tensor) -> torch.Tensor:
    """MSE(ε_θ(z_t, c_s), sg ε_θ(z_t, ∅))."""
    return F.mse_loss(student_cond, student_uncond.detach())


def erase(model: DiffusionModel, request: EraseRequest, config: SddConfig, run: RunOptions | None = None) -> Patch:
    run = run or RunOptions()
    T = config.sampling_steps
    with EditSession(model, config.scope) as session:
        with torch.no_grad():
            uncond = model.encode([""])[0]
            joined = model.encode([", ".join(request.concepts)])[0]
            singles = model.encode(request.concepts)
        schedule = Schedule(model, T)
        timesteps = schedule.timesteps
        holder: dict = {}

        def teacher_weights() -> dict[str, torch.Tensor]:
            return session.denoiser_part(holder["trainer"].ema)

        def sampled_by_teacher(step: int, gen: torch.Generator):
            u = int(torch.randint(0, T, (1,), generator=gen))
            pair = torch.stack([uncond, joined])
            weights = teacher_weights()

            def ema_eps(x, t, i):
                e = model.eps(x, t, pair, weights)
                return guided_eps(e[0], e[1], config.guidance)

            z = run_steps(schedule, initial_latents(model, gen), u, ema_eps)
            return z, timesteps[u], torch.tensor([step % len(request.concepts)])

        def sampled_by_base():
            base = session.teacher_denoiser()

            def walk(x, t, i, rows):
                e = model.eps(x, t, torch.stack([uncond, joined])[:, None].expand(2, len(rows), *uncond.shape), base)
                return (guided_eps(e[0], e[1], config.guidance),)

            pool = TrajectoryPool(model, schedule, walk, size=config.pool_size, refresh=config.pool_refresh,
                                  seed=config.seed)

            def draw(step: int, gen: torch.Generator):
                _, index, z, _ = pool.draw(step, gen, config.batch_size)
                # c_s cycles through the concepts over the examples, as over the steps with one per step
                k = (step * config.batch_size + torch.arange(config.batch_size)) % len(request.concepts)
                return share(z, timesteps[index.to(timesteps.device)], k)

            return draw

        examples = sampled_by_base() if config.pooled() else sampled_by_teacher

        adv = robust.adversary(model, session, config, request.concepts, config.steps, request.concepts, run)
        retain = robust.retain_term(model, session, config, request.concepts, run)

        def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
            z, t, k = examples(step, gen)
            k = k.to(singles.device)
            concept = adv.condition(step, z, t, k, singles[k]) if adv else singles[k]
            e = model.eps(z, t, torch.stack([uncond.expand(len(k), *uncond.shape), concept]))
            return sdd_loss(e[1], e[0])

        trainer = session.trainer(
            TrainerConfig.for_method(config, "sdd"),
            run,
        )
        holder["trainer"] = trainer
        state = trainer.fit(robust.with_retain(retain, loss_fn))
        return session.to_patch("sdd", config, request.concepts,
                                info={"final_loss": state.losses[-1], **robust.robust_info(adv, retain)},
                                edited=trainer.ema_state())
