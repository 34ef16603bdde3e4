"""UnlearnDiffAtk (Zhang et al., ECCV 2024): the edited model as its own diffusion classifier.

For each target prompt P, find k prefix tokens u minimising the edited model's denoising loss on the
*base* model's images of P: min_u E_ε ‖ε − ε̃(z_t, t, E([u; P]))‖² (the prediction type's target on
v / flow models). Each prefix position is a probability vector over the typable vocabulary, started
uniform; the forward pass samples one token per position and uses its one-hot row of the embedding
table; the backward pass is straight-through, the gradient clipped to [−1, 1]; Adam (lr 1e-2, weight
decay 0.1), then Euclidean projection back onto the simplex. The typed prompt is the per-position
argmax followed by P (the concept word stays: the attack adds words, it does not avoid one).

Where we differ from the authors' code (../shared/papers/attacks-reference-notes.md §1), and why:
- Timesteps: their 50 fixed timesteps 10, 30, …, 990 are visited in ascending blocks of 40 steps; we
  cycle through the same 50 one step each, so that every prefix of a run is a coherent attack and a
  budget curve (100 / 300 / 1,000 steps) costs one run.
- No in-loop success check: they draw an image after each block and stop when a classifier sees the
  concept; we run the whole budget and judge the final prompt with the evaluation's own detector and
  seeds, like every other attack.
- Reference images: every evaluation seed's base image of P, not one; the vocabulary excludes the
  concept word's own tokens and non-word pieces (tokens that would not type back to themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.core.noising import noised
from erasekit.core.tokens import TokenSlots, decode, free_placeholders, project_to_simplex, word_vocabulary
from erasekit.eval.attacks.base import (
    AttackInputs,
    AttackOutcome,
    Noised,
    base_latents,
    check_budgets,
    clean_batch,
    optimise_slots,
    outcomes,
)


def cycled_timesteps(scheduler, count: int) -> torch.Tensor:
    """`count` evenly spaced training timesteps, bin centres (1000 steps, 50: 10, 30, …, 990)."""
    total = scheduler.config.num_train_timesteps
    return ((torch.arange(count) + 0.5) * total / count).long()


@dataclass
class UnlearnDiffAttack:
    steps: int = 1000  # Adam steps (the authors' budget: 40 × 50 = 2,000, stopped at first success)
    tokens: int = 3  # prefix tokens (the authors: 3 for styles and objects, 5 for nudity)
    lr: float = 1e-2
    weight_decay: float = 0.1
    timesteps: int = 50  # fixed timesteps, cycled
    batch_size: int = 1  # noisy latents per target prompt per step
    seed: int = 0

    name = "unlearndiff"
    budget_field = "steps"

    def run(self, inputs: AttackInputs, budgets: Sequence[int]) -> list[AttackOutcome]:
        budgets = check_budgets(budgets)
        model, tok = inputs.model, inputs.model.tokenizer
        vocab = torch.tensor(word_vocabulary(tok, inputs.excluded()))
        slot_ids = free_placeholders(tok, self.tokens, inputs.prompts)
        prefix = decode(tok, slot_ids)
        texts = [f"{prefix} {p}" for p in inputs.prompts]
        latents = base_latents(inputs).to(model.device)
        n_prompts = latents.shape[0]
        slots = TokenSlots(model, slot_ids)
        tables = slots.table_rows(vocab.to(model.device))  # (V, width) per table
        probs = torch.full((n_prompts, self.tokens, len(vocab)), 1.0 / len(vocab), device=model.device,
                           requires_grad=True)
        probs.register_hook(lambda g: g.clamp(-1.0, 1.0))
        optimizer = torch.optim.Adam([probs], lr=self.lr, weight_decay=self.weight_decay)
        sampler = torch.Generator().manual_seed(self.seed + 1)
        schedule = cycled_timesteps(model.scheduler, self.timesteps)

        def vectors() -> dict[str, torch.Tensor]:
            flat = probs.detach().reshape(-1, len(vocab)).cpu()
            picked = torch.multinomial(flat, 1, generator=sampler).reshape(n_prompts, self.tokens)
            onehot = F.one_hot(picked, len(vocab)).to(probs)
            straight = onehot + probs - probs.detach()
            return {name: straight @ table.to(probs) for name, table in tables.items()}

        def batch(step: int, gen: torch.Generator) -> Noised:
            owners, z0, noise = clean_batch(latents, self.batch_size, gen)
            t = schedule[step % len(schedule)].repeat(len(owners)).to(model.device)
            x_t, target = noised(model.scheduler, z0, noise, t)
            return Noised(x_t, t, target, owners)

        @torch.no_grad()
        def after_step() -> None:
            probs.copy_(project_to_simplex(probs))

        def discrete() -> list[str]:
            ids = vocab[probs.detach().argmax(-1).cpu()]
            return [f"{decode(tok, row)} {p}" for row, p in zip(ids.tolist(), inputs.prompts, strict=True)]

        marks = optimise_slots(inputs, slots, texts, vectors, optimizer, batch, budgets, discrete, after_step,
                               seed=self.seed, description=self.name)
        return outcomes(inputs, marks)
