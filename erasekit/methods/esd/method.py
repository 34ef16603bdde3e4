"""ESD: the student's ε for c learns the negatively guided teacher ε*(∅) − η(ε*(c) − ε*(∅)).

x_t comes from DDIM sampling toward c with CFG `start_guidance`, stopped at a random step: by the
student itself (`sample_from="student"`, the paper's code and our default) or by the frozen base
(`"base"`, the authors' later diffusers code), whose trajectories are drawn in batches into a pool
(core.trajectory.TrajectoryPool) with the targets kept at every step. Differences from the paper code
(documented in docs/methods/baselines.md): the UNet is queried at the timestep the latent was actually
sampled to (the paper code draws t from a 20-step band one to two DDIM steps noisier than x_t; the
later diffusers code does what we do).
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
from erasekit.methods.esd.config import EsdConfig
from erasekit.request import EraseRequest


def esd_target(teacher_uncond: torch.Tensor, teacher_cond: torch.Tensor, eta: float) -> torch.Tensor:
    """ε*(∅) − η(ε*(c) − ε*(∅))."""
    return teacher_uncond - eta * (teacher_cond - teacher_uncond)


def erase(model: DiffusionModel, request: EraseRequest, config: EsdConfig, run: RunOptions | None = None) -> Patch:
    run = run or RunOptions()
    T = config.sampling_steps
    with EditSession(model, config.scope) as session:
        teacher = session.teacher_denoiser()
        with torch.no_grad():
            uncond = model.encode([""])[0]
            concepts = model.encode(request.concepts)
        schedule = Schedule(model, T)
        timesteps = schedule.timesteps

        @torch.no_grad()
        def frozen(x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(ε*(x, ∅), ε*(x, c_row)) for each latent."""
            e = model.eps(x, t, torch.stack([uncond.expand(len(rows), *uncond.shape), concepts[rows]]), teacher)
            return e[0], e[1]

        if config.sample_from == "base":
            def walk(x, t, i, rows):
                e_u, e_c = frozen(x, t, rows)
                return guided_eps(e_u, e_c, config.start_guidance), esd_target(e_u, e_c, config.eta)

            pool = TrajectoryPool(model, schedule, walk, size=config.pool_size, refresh=config.pool_refresh,
                                  seed=config.seed, n_groups=len(request.concepts))

            def examples(step: int, gen: torch.Generator):
                entries, index, x, (target,) = pool.draw(step, gen, config.batch_size)
                return x, timesteps[index.to(timesteps.device)], pool.groups[entries], target
        else:
            def examples(step: int, gen: torch.Generator):
                k = torch.randint(len(request.concepts), (1,), generator=gen)
                n = int(torch.randint(0, T, (1,), generator=gen))
                pair = torch.stack([uncond, concepts[int(k)]])

                def student_eps(x, t, i):
                    e = model.eps(x, t, pair)
                    return guided_eps(e[0], e[1], config.start_guidance)

                x = run_steps(schedule, initial_latents(model, gen), n, student_eps)
                return x, timesteps[n], k, esd_target(*frozen(x, timesteps[n], k), config.eta)

        adv = robust.adversary(model, session, config, request.concepts, config.steps, request.concepts, run)
        retain = robust.retain_term(model, session, config, request.concepts, run)

        def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
            drawn = examples(step, gen)
            x, t, k, target = share(*drawn) if config.pooled() else drawn  # one fresh example: every process
            k = k.to(concepts.device)
            concept = session.student_condition([request.concepts[int(i)] for i in k], concepts[k])
            if adv:
                concept = adv.condition(step, x, t, k, concept, frozen=concepts[k])
            prediction = model.eps(x, t, concept[None])[0]
            return F.mse_loss(prediction, target)

        trainer = session.trainer(
            TrainerConfig.for_method(config, f"esd-{config.variant}"),
            run,
        )
        state = trainer.fit(robust.with_retain(retain, loss_fn))
        return session.to_patch("esd", config, request.concepts,
                                info={"variant": config.variant, "sample_from": config.sample_from,
                                      "final_loss": state.losses[-1], **robust.robust_info(adv, retain)})
