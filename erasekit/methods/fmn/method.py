"""Forget-Me-Not: minimise the cross-attention the concept's tokens receive on its own images.

Loss: the (unsquared) L2 norm of all post-softmax attention probabilities on the concept's
token columns, over every cross-attention layer, head and pixel, for a noised concept
image at t ~ U[0, 1000). No denoising term. Difference from the authors: the concept
images are drawn from the base model (prompt = the template) instead of supplied by the
user, so the method needs nothing but the concept's name.

Robust erasure (core.robust, not in the paper): after the warm-up the prompt is [δ; template(c)], δ the
adversarial prefix re-attacked on the step's (z_t, t), and the loss steers δ's columns as well as the
concept's: the prefix is there because it carries the concept back.
"""

from __future__ import annotations

import torch

from erasekit.core import robust
from erasekit.core.attention import control_attention, token_indices
from erasekit.core.data import concept_latents
from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.noising import add_noise
from erasekit.core.patch import Patch
from erasekit.core.tokens import decode
from erasekit.core.trainer import TrainerConfig
from erasekit.methods.fmn.config import FmnConfig
from erasekit.request import EraseRequest


def attention_norm(maps: dict[str, list[torch.Tensor]], columns: list[int]) -> torch.Tensor:
    """‖concatenated attention on `columns`‖₂ over every recorded layer call."""
    parts = [probs[..., columns].reshape(-1) for calls in maps.values() for probs in calls]
    return torch.cat(parts).norm()


def concept_columns(model: DiffusionModel, prompt: str, concept: str, use_pooler: bool) -> list[int]:
    """The concept's token positions in the prompt's sequence (and, with use_pooler, its EOS and padding)."""
    tok = model.sequence_tokenizer
    columns = token_indices(tok, prompt, concept)
    if use_pooler:
        with torch.no_grad():
            length = model.encode([prompt]).hidden.shape[-2]
        n = len(tok(prompt).input_ids)  # [BOS] ... EOS; padding follows
        columns += list(range(n - 1, min(tok.model_max_length, length)))
    return columns


def prefix_columns(model: DiffusionModel, adv: robust.AdversarialPrefix, concepts: list[str],
                   use_pooler: bool) -> list[list[int]]:
    """Each concept's columns in the adversary's prompt [δ; template(c)]: the concept's and δ's."""
    prefix, tok = decode(model.tokenizer, adv.slot_ids), model.sequence_tokenizer  # the text the adversary prepends
    return [sorted({*concept_columns(model, text, c, use_pooler), *token_indices(tok, text, prefix)})
            for text, c in zip(adv.texts, concepts, strict=True)]


def erase(model: DiffusionModel, request: EraseRequest, config: FmnConfig, run: RunOptions | None = None) -> Patch:
    run = run or RunOptions()
    prompts = [config.template.format(c) for c in request.concepts]
    latents = [concept_latents(model, [p], config.n_images, config.image_steps, config.guidance, config.seed,
                               run.cache_dir, run.progress) for p in prompts]
    columns = [concept_columns(model, p, c, config.use_pooler) for p, c in zip(prompts, request.concepts, strict=True)]
    with torch.no_grad():
        embeds = model.encode(prompts)

    with EditSession(model, config.scope) as session:
        adv = robust.adversary(model, session, config, prompts, config.steps, request.concepts, run)
        attacked_columns = prefix_columns(model, adv, request.concepts, config.use_pooler) if adv else []
        retain = robust.retain_term(model, session, config, request.concepts, run)

        def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
            k = int(torch.randint(len(prompts), (1,), generator=gen))
            i = int(torch.randint(config.n_images, (1,), generator=gen))
            t = int(torch.randint(0, model.scheduler.config.num_train_timesteps, (1,), generator=gen))
            z0 = latents[k][i : i + 1]
            noise = torch.randn(z0.shape, generator=gen).to(z0.device, z0.dtype)
            zt = add_noise(model.scheduler, z0, noise, torch.tensor([t]))
            cond, cols = embeds[k : k + 1], columns[k]
            if adv is not None and adv.active(step):
                # the attack's own forwards run before the maps are recorded
                cond = adv.condition(step, zt, torch.tensor([t], device=model.device), torch.tensor([k]), cond)
                cols = attacked_columns[k]
            with control_attention(model.denoiser, keep_grad=True) as store:
                model.eps(zt, torch.tensor(t, device=model.device), cond)
                return attention_norm(store.maps, cols)

        trainer = session.trainer(
            TrainerConfig.for_method(config, "fmn"),
            run,
        )
        state = trainer.fit(robust.with_retain(retain, loss_fn))
        return session.to_patch("fmn", config, request.concepts,
                                info={"final_loss": state.losses[-1], **robust.robust_info(adv, retain)})
