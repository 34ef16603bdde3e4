"""ESD: the student's ε for c learns the negatively guided teacher ε*(∅) − η(ε*(c) − ε*(∅)).

x_t comes from the student's own DDIM sampling toward c with CFG `start_guidance`,
stopped at a random step, as in the paper's code. Differences from that code
(documented in docs/methods/baselines.md): the UNet is queried at the timestep the
latent was actually sampled to (the paper code draws t from a 20-step band one to two
DDIM steps noisier than x_t; the later diffusers code does what we do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.patch import Patch
from erasekit.core.sampler import guided_eps
from erasekit.core.trainer import TrainerConfig
from erasekit.core.trajectory import initial_latents, run_ddim, timesteps_for
from erasekit.methods.esd.config import EsdConfig
from erasekit.request import EraseRequest


def esd_target(teacher_uncond: torch.Tensor, teacher_cond: torch.Tensor, eta: float) -> torch.Tensor:
    """ε*(∅) − η(ε*(c) − ε*(∅))."""
    return teacher_uncond - eta * (teacher_cond - teacher_uncond)


def erase(model: DiffusionModel, request: EraseRequest, config: EsdConfig, run: RunOptions | None = None) -> Patch:
    run = run or RunOptions()
    T = config.sampling_steps
    with EditSession(model, config.scope) as session:
        teacher = session.teacher_unet()
        with torch.no_grad():
            uncond = model.encode([""])[0]
            concepts = model.encode(request.concepts)
        timesteps = timesteps_for(model, T)

        def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
            k = int(torch.randint(len(request.concepts), (1,), generator=gen))
            n = int(torch.randint(0, T, (1,), generator=gen))
            pair = torch.stack([uncond, concepts[k]])

            def student_eps(x, t, i):
                e = model.eps(x, t, pair)
                return guided_eps(e[0], e[1], config.start_guidance)

            x = run_ddim(model, initial_latents(model, gen), timesteps, n, student_eps)
            t = timesteps[n]
            with torch.no_grad():
                frozen = model.eps(x, t, pair, teacher)
            prediction = model.eps(x, t, concepts[k : k + 1])[0]
            return F.mse_loss(prediction, esd_target(frozen[0], frozen[1], config.eta))

        trainer = session.trainer(
            TrainerConfig.for_method(config, f"esd-{config.variant}"),
            run,
        )
        state = trainer.fit(loss_fn)
        return session.to_patch("esd", config, request.concepts,
                                info={"variant": config.variant, "final_loss": state.losses[-1]})
