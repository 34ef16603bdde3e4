"""Concept Inversion and the hard-prompt attack: learned placeholder rows of the token tables.

Both train placeholder token rows of the text encoder with the ordinary denoising loss on base-model
images of the concept, against the *edited* model, then generate the target prompts with the
concept's word replaced; the detector's concept rate on those images is the attack's success rate
(`recovery_rate`, `recovery_rate_prompt`).

- Concept Inversion (Pham et al., "Circumventing Concept Erasure Methods"): one learned
  embedding, used as is (textual inversion).
- A prompt attack in the spirit of UnlearnDiffAtk: a few learned embeddings projected to their
  nearest real vocabulary tokens, i.e. an adversarial *text* prompt anyone could type.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.core import patch as patching
from erasekit.core.data import SamplingSettings
from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.noising import noised
from erasekit.core.sampler import generate_images
from erasekit.core.tokens import nearest_tokens
from erasekit.core.trainer import TrainerConfig
from erasekit.errors import ErasekitError
from erasekit.eval.attacks.base import AttackInputs, AttackOutcome, base_latents, check_budgets


@dataclass
class InversionAttack:
    steps: int = 200
    lr: float = 5e-3
    batch_size: int = 4
    placeholders: tuple[str, ...] = ("z",)  # existing rarely used tokens whose rows are hijacked
    project: bool = False  # True: snap the learned rows to real tokens (the prompt attack)
    seed: int = 0

    budget_field = "steps"

    @property
    def name(self) -> str:
        return "hard-prompt" if self.project else "concept-inversion"

    def run(self, inputs: AttackInputs, budgets: Sequence[int]) -> list[AttackOutcome]:
        """One training run per budget: the trainer has no stop at which to draw the images midway."""
        found = []
        for budget in check_budgets(budgets):
            images, text, seconds = recover(inputs.model, inputs.patches, inputs.concept_word, inputs.prompts,
                                            inputs.settings, dataclasses.replace(self, steps=budget),
                                            inputs.cache_dir, inputs.progress)
            found.append(AttackOutcome(budget, [p.replace(inputs.concept_word, text) for p in inputs.prompts],
                                       images, seconds))
        return found


def concept_inversion_attack(**settings) -> InversionAttack:
    """Concept Inversion: one learned embedding, used as is (textual inversion)."""
    return InversionAttack(**settings)


def prompt_attack(steps: int = 200, **settings) -> InversionAttack:
    """The hard-prompt attack: three learned tokens, projected to the vocabulary."""
    return InversionAttack(**{"steps": steps, "lr": 1e-2, "placeholders": ("z", "q", "x"), "project": True,
                              **settings})


def recover(
    model: DiffusionModel,
    patches: Sequence[patching.Patch],
    concept_word: str,
    prompts: Sequence[str],
    settings: SamplingSettings,
    attack: InversionAttack,
    cache_dir=None,
    progress: bool = False,
) -> tuple[torch.Tensor, str, float]:
    """(images of `prompts` with the concept word replaced after the attack, the replacement text, the
    seconds the attack took before drawing them)."""
    if "embedding" not in model.family.scopes:
        raise ErasekitError(f"{attack.name} learns token-embedding rows of the first tokenizer, which "
                            f"{model.family.name} models do not read their sequence from")
    tok = model.tokenizer
    ids = [tok(p, add_special_tokens=False).input_ids for p in attack.placeholders]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"placeholders {attack.placeholders} must each be a single token")
    ids = [i[0] for i in ids]
    inputs = AttackInputs(model, patches, concept_word, list(prompts), settings, cache_dir, progress)
    owners, flat = inputs.pairs()
    latents = base_latents(inputs).flatten(0, 1)  # the base model's concept, prompt-major as `owners`
    placeholder_text = " ".join(attack.placeholders)
    attacked = [p.replace(concept_word, placeholder_text) for p in prompts]
    with patching.applied_temporarily(model, patches):
        with EditSession(model, "embedding", token_ids=ids) as session:

            def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
                idx = torch.randint(len(latents), (attack.batch_size,), generator=gen)
                t = torch.randint(0, model.scheduler.config.num_train_timesteps, (attack.batch_size,),
                                  generator=gen).to(model.device)
                z0 = latents[idx]
                noise = torch.randn(z0.shape, generator=gen).to(z0.device, z0.dtype)
                cond = model.encode([attacked[int(i) // len(settings.seeds)] for i in idx])
                x_t, target = noised(model.scheduler, z0, noise, t)
                pred = model.eps(x_t, t, cond[None])[0]
                return F.mse_loss(pred, target)

            trainer = session.trainer(TrainerConfig(steps=attack.steps, lr=attack.lr, seed=attack.seed,
                                                    grad_clip=None, description=attack.name),
                                      RunOptions(progress=progress))
            started = time.perf_counter()
            trainer.fit(loss_fn)
            if attack.project:
                # Every text encoder's table learned its own rows: the nearest real token is judged on
                # all of them at once (SDXL: CLIP-L ⊕ CLIP-G features of one vocabulary).
                vocabulary = torch.cat(list(session.base.values()), dim=1)
                learned = torch.cat([p.detach()[ids] for p in session.params.values()], dim=1)
                hard = nearest_tokens(vocabulary, learned, set(ids) | inputs.excluded())
                session.restore()  # the hard prompt runs on the untouched vocabulary
                placeholder_text = tok.decode(hard).strip()
                attacked = [p.replace(concept_word, placeholder_text) for p in prompts]
            seconds = time.perf_counter() - started
            with torch.no_grad():
                images = generate_images(model, [attacked[i] for i in owners], flat.seeds, steps=flat.steps,
                                         guidance=flat.guidance, batch_size=flat.batch_size, progress=progress)
            return images, placeholder_text, seconds


def concept_inversion(model, patches, concept_word, prompts, settings, attack, cache_dir=None, progress=False):
    """Concept Inversion's images (see `recover`)."""
    return recover(model, patches, concept_word, prompts, settings, attack, cache_dir, progress)[0]
