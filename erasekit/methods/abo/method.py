"""All but One (Algorithm 1, Eq. 12–13): change only the guidance term of the erased concept.

For each step: draw τ ~ U{1..T} and x_T ~ N(0, I); run the frozen teacher θ* with DDIM
(η = 0) from T down to τ using ε̂ = ε*(∅) + γ1(ε*(c′) − ε*(∅)) + δ; then

    L_concept = ‖γ2(ε_θ(x_τ, c) − sg ε_θ(x_τ, ∅)) − (γ1(ε*(x_τ, c′) − ε*(x_τ, ∅)) + δ)‖²
    L_penalty = ‖ε_θ(x_τ, ∅) − ε*(x_τ, ∅)‖²
    L = L_concept + λ L_penalty

c′ is the request's anchor for c (c itself when none is given, so that δ alone steers).
δ is explicit (SEGA-bottlenecked instruction concepts, Eq. 13), implicit (the teacher run
with c's cross-attention suppressed, Prompt-to-Prompt style, whose guidance becomes the
target), or absent. Paper vs. code notes: docs/methods/abo.md.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from erasekit.core import robust
from erasekit.core.attention import control_attention, special_prefix
from erasekit.core.distributed import share
from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.guidance import bottlenecked_delta
from erasekit.core.model import DiffusionModel
from erasekit.core.patch import Patch
from erasekit.core.schedule import Schedule
from erasekit.core.trainer import TrainerConfig
from erasekit.core.trajectory import TrajectoryPool
from erasekit.methods.abo.config import AboConfig
from erasekit.request import EraseRequest


def abo_losses(
    student_cond: torch.Tensor,
    student_uncond: torch.Tensor,
    teacher_uncond: torch.Tensor,
    target_guidance: torch.Tensor,
    gamma2: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_concept, L_penalty) of Eq. 12/13, as mean squared errors.

    The stop-gradient on ε_θ(∅) inside the concept term means only the penalty moves ε_θ(∅).
    """
    concept = F.mse_loss(gamma2 * (student_cond - student_uncond.detach()), target_guidance)
    penalty = F.mse_loss(student_uncond, teacher_uncond)
    return concept, penalty


def concept_token_scale(model: DiffusionModel, concept: str, factor: float, with_eos: bool = False) -> torch.Tensor:
    """(L,) attention multipliers: `factor` on the tokens spelling `concept` in its own prompt
    (and on every EOS/padding position after them when `with_eos`)."""
    tok = model.sequence_tokenizer
    n_tokens = len(tok(concept, add_special_tokens=False).input_ids)
    with torch.no_grad():
        length = model.encode([concept]).hidden.shape[-2]  # SD3: CLIP's tokens, then T5's
    prefix = special_prefix(tok)  # CLIP's BOS; none for T5
    scale = torch.ones(length, device=model.device)
    scale[prefix : (min(tok.model_max_length, length) if with_eos else prefix + n_tokens)] = factor
    return scale


class _Teacher:
    """θ*'s ε for one concept: the sampling direction ε̂ and the training target (γ1·guidance + δ)."""

    def __init__(self, model: DiffusionModel, session: EditSession, config: AboConfig, request: EraseRequest):
        self.model = model
        self.config = config
        self.weights = session.teacher_denoiser()
        self.instructions = config.instruction_concepts() if config.delta == "explicit" else []
        with torch.no_grad():
            self.uncond = model.encode([""])[0]
            # The implicit δ is the teacher's own guidance toward c with c's tokens suppressed: no anchor.
            self.anchor_words = [c if config.delta == "implicit" or not a else a
                                 for c, a in zip(request.concepts, request.anchor_list(), strict=True)]
            self.anchors = model.encode(self.anchor_words)
            self.instruction_embeds = model.encode([i.text for i in self.instructions]) if self.instructions else None
        self.scales = None
        if config.delta == "implicit":
            self.scales = [concept_token_scale(model, c, config.attention_scale, config.suppress_eos)
                           for c in request.concepts]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, tau: int, rows: torch.Tensor):
        """Returns (ε̂ for the DDIM step, target guidance, ε*(x, ∅)); rows: each latent's concept index."""
        b = x.shape[0]
        rows = rows.to(self.anchors.device)
        conds = [self.uncond.expand(b, *self.uncond.shape), self.anchors[rows]]
        if self.instruction_embeds is not None:
            conds += [e.expand(b, *e.shape) for e in self.instruction_embeds]
        stacked = torch.stack(conds)  # (K, B, L, D)
        if self.scales is not None:
            ctx = control_attention(self.model.denoiser, record=False)
        else:
            ctx = nullcontext()
        with ctx as store:
            if store is not None:
                scales = torch.stack(self.scales)[rows]  # (B, L): c's tokens suppressed in the anchor slot
                ones = torch.ones_like(scales)
                per_cond = [ones, scales] + [ones] * (len(conds) - 2)
                store.token_scale = torch.cat(per_cond)  # cond-major, as eps batches them
            eps = self.model.eps(x, t, stacked, self.weights)
        eps_u, eps_anchor = eps[0], eps[1]
        guidance = self.config.gamma1 * (eps_anchor - eps_u)
        if self.instructions:
            guidance = guidance + bottlenecked_delta(eps_u, eps[2:], self.instructions, tau, self.config.t_warmup)
        return eps_u + guidance, guidance, eps_u

    @torch.no_grad()
    def guidance_toward(self, x: torch.Tensor, t: torch.Tensor, anchors, eps_u: torch.Tensor) -> torch.Tensor:
        """γ1(ε*(x, a) − ε*(x, ∅)) for one anchor condition per latent (δ = none: the config refuses the others)."""
        return self.config.gamma1 * (self.model.eps(x, t, anchors[None], self.weights)[0] - eps_u)


def erase(
    model: DiffusionModel, request: EraseRequest, config: AboConfig, run: RunOptions | None = None
) -> Patch:
    run = run or RunOptions()
    T = config.sampling_steps
    with EditSession(model, config.scope) as session:
        teacher = _Teacher(model, session, config, request)
        with torch.no_grad():
            concept_embeds = model.encode(request.concepts)
        schedule = Schedule(model, T)
        timesteps = schedule.timesteps  # index i ↔ τ = T − i
        # θ*'s trajectories with ε̂, its target guidance and ε*(∅) kept at every step: θ* is frozen, so
        # they do not depend on the student (size = refresh = batch = 1: the paper's fresh walk per step).
        pool = TrajectoryPool(model, schedule, lambda x, t, i, rows: teacher(x, t, T - i, rows),
                              size=config.pool_size, refresh=config.pool_refresh, seed=config.seed,
                              n_groups=len(request.concepts))

        adv = robust.adversary(model, session, config, request.concepts, config.steps, request.concepts, run)
        retain = robust.retain_term(model, session, config, request.concepts, run)
        # With the adversary in sentences, the target is the anchor's guidance in the same sentence: toward the
        # bare anchor, every sentence would be taught to lose its other words.
        anchors_in_context = None
        if adv and config.robust_contexts:
            with torch.no_grad():
                anchors_in_context = model.encode(adv.variant_texts(teacher.anchor_words))

        def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
            entries, index, x, (target, teacher_uncond) = pool.draw(step, gen, config.batch_size)
            entries, index, x, target, teacher_uncond = share(entries, index, x, target, teacher_uncond)
            t = timesteps[index.to(timesteps.device)]
            k = pool.groups[entries].to(concept_embeds.device)
            uncond = session.student_condition([""], teacher.uncond[None])[0]
            concept = session.student_condition([request.concepts[int(i)] for i in k], concept_embeds[k])
            if adv:
                concept = adv.condition(step, x, t, k, concept, frozen=concept_embeds[k])
                if anchors_in_context is not None and adv.active(step):
                    target = teacher.guidance_toward(
                        x, t, anchors_in_context[adv.last_variants.to(anchors_in_context.device)], teacher_uncond)
            student = model.eps(x, t, torch.stack([uncond.expand(len(k), *uncond.shape), concept]))
            concept, penalty = abo_losses(student[1], student[0], teacher_uncond, target, config.gamma2)
            return concept + config.lam * penalty

        trainer = session.trainer(
            TrainerConfig.for_method(config, "abo"),
            run,
        )
        state = trainer.fit(robust.with_retain(retain, loss_fn))
        return session.to_patch(
            "abo", config, request.concepts,
            info={"anchors": request.anchors, "steps_done": state.step, "final_loss": state.losses[-1],
                  **robust.robust_info(adv, retain)},
        )
