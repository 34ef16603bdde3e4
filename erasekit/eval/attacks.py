"""Recovery attacks: can the erased concept be brought back without changing the UNet?

Concept Inversion (Pham et al., "Circumventing Concept Erasure Methods"): textual inversion
on the *edited* model. A placeholder token's embedding row is trained with the ordinary
denoising loss on base-model images of the concept, then target prompts are generated with
the placeholder in place of the concept's word. The attack's success rate is the
detector's concept rate on those images (`recovery_rate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.core import patch as patching
from erasekit.core.data import SamplingSettings, cached_images
from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images
from erasekit.core.trainer import TrainerConfig


@dataclass
class InversionAttack:
    steps: int = 200
    lr: float = 5e-3
    batch_size: int = 4
    placeholder: str = "z"  # an existing rarely used token whose row is hijacked (no new vocabulary)
    seed: int = 0


def concept_inversion(
    model: DiffusionModel,
    patches: Sequence[patching.Patch],
    concept_word: str,
    prompts: Sequence[str],
    settings: SamplingSettings,
    attack: InversionAttack,
    cache_dir=None,
    progress: bool = False,
) -> torch.Tensor:
    """Images of `prompts` (word → learned placeholder) from the patched model after the attack."""
    tok = model.tokenizer
    ids = tok(attack.placeholder, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"placeholder {attack.placeholder!r} must be a single token")
    pairs = [(p, s) for p in prompts for s in settings.seeds]
    flat = SamplingSettings(seeds=[s for _, s in pairs], steps=settings.steps, guidance=settings.guidance)
    real = cached_images(model, [p for p, _ in pairs], flat, cache_dir, progress)  # the base model's concept
    latents = torch.cat([model.encode_images(real[i : i + 64]) for i in range(0, len(real), 64)])
    attacked = [p.replace(concept_word, attack.placeholder) for p in prompts]
    alphas = model.scheduler.alphas_cumprod.to(model.device)
    for p in patches:
        patching.apply(model, p)
    try:
        with EditSession(model, "embedding", token_ids=ids) as session:

            def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
                idx = torch.randint(len(latents), (attack.batch_size,), generator=gen)
                t = torch.randint(0, len(alphas), (attack.batch_size,), generator=gen).to(model.device)
                z0 = latents[idx]
                noise = torch.randn(z0.shape, generator=gen).to(z0.device, z0.dtype)
                a = alphas[t].view(-1, 1, 1, 1)
                cond = model.encode([attacked[int(i) // len(settings.seeds)] for i in idx])
                pred = model.eps(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, cond[None])[0]
                return F.mse_loss(pred, noise)

            trainer = session.trainer(TrainerConfig(steps=attack.steps, lr=attack.lr, seed=attack.seed,
                                                    grad_clip=None, description="concept inversion"),
                                      RunOptions(progress=progress))
            trainer.fit(loss_fn)
            with torch.no_grad():
                return generate_images(model, [attacked[i // len(settings.seeds)] for i in range(len(pairs))],
                                       flat.seeds, steps=settings.steps, guidance=settings.guidance,
                                       batch_size=settings.batch_size, progress=progress)
    finally:
        for p in reversed(list(patches)):
            patching.remove(model, p)
