"""One interface for every attack, and the optimisation loop the gradient prompt attacks share.

An attack gets the model, the patches under attack, the erased concept's word, the target prompts and
the evaluation's sampling settings (`AttackInputs`), and returns one `AttackOutcome` per budget asked
for (ascending): the text typed for each target prompt and the edited model's images of those texts
on the evaluation seeds. A run to the largest budget records the smaller ones on the way, so a budget
curve costs one run (Concept Inversion, whose trainer has no such stop, runs once per budget).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from erasekit.core import patch as patching
from erasekit.core.data import SamplingSettings, cached_images
from erasekit.core.sampler import generate_images
from erasekit.core.tokens import TokenSlots, concept_ids, special_ids


@dataclass
class AttackInputs:
    model: Any
    patches: Sequence[patching.Patch]
    concept_word: str
    prompts: list[str]  # target prompts, each with the concept word
    settings: SamplingSettings  # the evaluation's seeds and sampler: base images and attacked images
    cache_dir: Any = None
    progress: bool = False

    def pairs(self) -> tuple[list[int], SamplingSettings]:
        """The (prompt index, seed) pairs in prompt-major order, and their flat sampling settings."""
        owners = [i for i in range(len(self.prompts)) for _ in self.settings.seeds]
        flat = dataclasses.replace(self.settings, seeds=list(self.settings.seeds) * len(self.prompts))
        return owners, flat

    def excluded(self) -> set[int]:
        """Token ids no discrete attack may type: the concept word's own and the special tokens."""
        tok = self.model.tokenizer
        return concept_ids(tok, self.concept_word) | special_ids(tok)


@dataclass
class AttackOutcome:
    budget: int
    texts: list[str]  # what is typed for each target prompt
    images: torch.Tensor  # the edited model's images of `texts` on the seeds, prompt-major
    seconds: float  # attack time up to this budget (optimisation and search, not drawing the images)


class Attack(Protocol):
    name: str
    budget_field: str  # the setting a budget sets (optimisation steps or search generations)
    seed: int

    def run(self, inputs: AttackInputs, budgets: Sequence[int]) -> list[AttackOutcome]: ...


def draw(inputs: AttackInputs, texts: Sequence[str]) -> torch.Tensor:
    """The patched model's images of `texts` (one per target prompt) on every evaluation seed."""
    owners, flat = inputs.pairs()
    with patching.applied_temporarily(inputs.model, inputs.patches), torch.no_grad():
        return generate_images(inputs.model, [texts[i] for i in owners], flat.seeds, steps=flat.steps,
                               guidance=flat.guidance, batch_size=flat.batch_size, progress=inputs.progress)


def base_latents(inputs: AttackInputs) -> torch.Tensor:
    """Latents of the *base* model's images of each target prompt on the seeds: (prompts, seeds, C, H, W)."""
    owners, flat = inputs.pairs()
    images = cached_images(inputs.model, [inputs.prompts[i] for i in owners], flat, inputs.cache_dir, inputs.progress)
    model = inputs.model
    latents = torch.cat([model.encode_images(images[i : i + 64]) for i in range(0, len(images), 64)])
    return latents.reshape(len(inputs.prompts), len(inputs.settings.seeds), *latents.shape[1:])


def clean_batch(latents: torch.Tensor, per_prompt: int, gen: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(owner prompt of each example, a base latent of that prompt on a random seed, fresh noise) for
    `per_prompt` examples of every prompt; latents: (prompts, seeds, C, H, W)."""
    owners = torch.arange(latents.shape[0]).repeat_interleave(per_prompt)
    z0 = latents[owners, torch.randint(latents.shape[1], (len(owners),), generator=gen)]
    return owners, z0, torch.randn(z0.shape, generator=gen).to(z0)


@dataclass
class Noised:
    """One optimisation batch: noisy latents, their timesteps, what the prediction should match, and
    which target prompt (variable row) each belongs to."""

    x_t: torch.Tensor
    t: torch.Tensor
    target: torch.Tensor
    owners: torch.Tensor


def optimise_slots(
    inputs: AttackInputs,
    slots: TokenSlots,
    texts: Sequence[str],
    vectors: Callable[[], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    batch: Callable[[int, torch.Generator], Noised],
    budgets: Sequence[int],
    discrete: Callable[[], list[str]],
    after_step: Callable[[], None] = lambda: None,
    seed: int = 0,
    description: str = "attack",
) -> list[tuple[int, list[str], float]]:
    """Minimise ‖ε̃(x_t, t, E(texts with slot vectors)) − target‖² on the patched model; at each budget,
    the texts `discrete()` types then and the seconds so far. texts[i] is target prompt i's attacked text."""
    gen = torch.Generator().manual_seed(seed)
    model = inputs.model
    marks: list[tuple[int, list[str], float]] = []
    spent = 0.0
    with patching.applied_temporarily(model, inputs.patches), slots:
        bar = tqdm(range(max(budgets)), desc=description, disable=not inputs.progress, leave=False)
        for step in bar:
            start = time.perf_counter()
            b = batch(step, gen)
            slots.set(vectors(), b.owners)
            cond = model.encode([texts[int(o)] for o in b.owners])
            loss = F.mse_loss(model.eps(b.x_t, b.t, cond[None])[0].float(), b.target.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            after_step()
            spent += time.perf_counter() - start
            bar.set_postfix(loss=f"{loss.item():.4g}")
            if step + 1 in budgets:
                start = time.perf_counter()
                with torch.no_grad():
                    typed = discrete()
                spent += time.perf_counter() - start
                marks.append((step + 1, typed, spent))
    return marks


def outcomes(inputs: AttackInputs, marks: Sequence[tuple[int, list[str], float]]) -> list[AttackOutcome]:
    """Draw the patched model's images of each budget's typed texts."""
    return [AttackOutcome(budget, texts, draw(inputs, texts), seconds) for budget, texts, seconds in marks]


def check_budgets(budgets: Sequence[int]) -> list[int]:
    ordered = sorted(set(int(b) for b in budgets))
    if not ordered or ordered[0] < 1:
        raise ValueError(f"attack budgets must be positive, got {list(budgets)}")
    return ordered
