"""Concept Ablation: make the target prompt c* produce the anchor concept c's distribution.

Anchor images come from the base model on anchor prompts (cached on disk by model
fingerprint); target prompts are the anchor prompts with the anchor word replaced by the
target. On x_t, a noised anchor image:

    model-based:  ‖ε_θ(x_t, c*) − sg ε*(x_t, c)‖²   (ε*: the frozen base)
    noise-based:  ‖ε_θ(x_t, c*) − ε‖²
    (+ prior_weight · ‖ε_θ(x′_t, c) − ε′‖² on anchor images, optional)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from erasekit.core import robust
from erasekit.core.data import concept_latents
from erasekit.core.distributed import share
from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.noising import noised
from erasekit.core.patch import Patch
from erasekit.core.trainer import TrainerConfig
from erasekit.errors import ErasekitError
from erasekit.methods.ca.config import CaConfig
from erasekit.request import EraseRequest


def ca_loss(prediction: torch.Tensor, anchor_teacher: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """Model-based when the teacher's anchor prediction is given, noise-based (the scheduler's training
    target: ε, or v on a v-prediction model) otherwise."""
    target = anchor_teacher.detach() if anchor_teacher is not None else target
    return F.mse_loss(prediction, target)


def prompt_pairs(concept: str, anchor: str, config: CaConfig, templates: list[str]) -> list[tuple[str, str]]:
    """(anchor prompt, target prompt) pairs; the target replaces the anchor word by the concept."""
    anchors = config.anchor_prompts or [t.format(anchor) for t in templates]
    pairs = []
    for prompt in anchors:
        if anchor not in prompt:
            raise ErasekitError(f"anchor prompt {prompt!r} does not contain the anchor {anchor!r}")
        pairs.append((prompt, prompt.replace(anchor, concept)))
    return pairs


def erase(model: DiffusionModel, request: EraseRequest, config: CaConfig, run: RunOptions | None = None) -> Patch:
    run = run or RunOptions()
    anchors = request.anchor_list()
    templates = config.concept_templates or [config.prompt_templates] * len(request.concepts)
    pairs = [prompt_pairs(c, a, config, t) for c, a, t in zip(request.concepts, anchors, templates, strict=True)]
    latents = [concept_latents(model, [a for a, _ in p], config.n_images, config.image_steps, config.image_guidance,
                               config.seed, run.cache_dir, run.progress) for p in pairs]
    with torch.no_grad():
        anchor_embeds = [model.encode([a for a, _ in p]) for p in pairs]
        target_embeds = [model.encode([t for _, t in p]) for p in pairs]
    token_ids = None
    if config.scope == "embedding":
        tok = model.tokenizer
        token_ids = sorted({i for c in request.concepts for i in tok(c, add_special_tokens=False).input_ids})
    n_train = model.scheduler.config.num_train_timesteps

    with EditSession(model, config.scope, token_ids=token_ids) as session:
        teacher = session.teacher_denoiser() if config.teacher == "frozen" else None

        def draw(k: int, gen: torch.Generator):
            idx = torch.randint(len(latents[k]), (config.batch_size,), generator=gen)
            t = torch.randint(0, n_train, (config.batch_size,), generator=gen).to(model.device)
            z0 = latents[k][idx]
            noise = torch.randn(z0.shape, generator=gen).to(z0.device, z0.dtype)
            prompt_idx = (idx % len(pairs[k])).to(model.device)  # image i was drawn from prompt i mod P
            x_t, target = noised(model.scheduler, z0, noise, t)
            return share(x_t, t, target, prompt_idx)

        adv = [robust.adversary(model, session, config, [c for _, c in p], config.steps, [concept], run)
               for p, concept in zip(pairs, request.concepts, strict=True)]
        retain = robust.retain_term(model, session, config, request.concepts, run)

        def student_cond(k: int, p: torch.Tensor, side: int, frozen: list):
            """What the student reads for concept k's prompts p (side 0: anchor, 1: target)."""
            return session.student_condition([pairs[k][i][side] for i in p.tolist()], frozen[k][p])

        def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
            k = int(torch.randint(len(request.concepts), (1,), generator=gen))
            x, t, target, p = draw(k, gen)
            target_cond = student_cond(k, p, 1, target_embeds)
            if adv[k] is not None:
                target_cond = adv[k].condition(step, x, t, p, target_cond, frozen=target_embeds[k][p])
            prediction = model.eps(x, t, target_cond[None])[0]
            anchor_eps = None
            if config.variant == "model":
                with torch.no_grad():
                    anchor_eps = model.eps(x, t, anchor_embeds[k][p][None], teacher)[0]
            loss = ca_loss(prediction, anchor_eps, target)
            if config.prior_weight:
                x2, t2, target2, p2 = draw(k, gen)
                prior = model.eps(x2, t2, student_cond(k, p2, 0, anchor_embeds)[None])[0]
                loss = loss + config.prior_weight * F.mse_loss(prior, target2)
            return loss

        trainer = session.trainer(
            TrainerConfig.for_method(config, f"ca-{config.variant}"),
            run,
        )
        state = trainer.fit(robust.with_retain(retain, loss_fn))
        return session.to_patch("ca", config, request.concepts,
                                info={"anchors": anchors, "final_loss": state.losses[-1],
                                      **robust.robust_info(adv[0], retain)})
