"""P4D (Chin et al., ICML 2024): a prompt under which the edited model predicts what the base model
predicts for the original prompt.

min_{P*} E_{t~U[0,T), ε} ‖ε̃(z_t, t, E(P*)) − ε*(z_t, t, E(P))‖², z_t noised from the base model's
image of P. P* is a soft prompt kept on the typable vocabulary by PEZ: each step the continuous
embeddings are projected to their cosine-nearest real tokens, the loss is taken there and its
gradient applied to the continuous copy (AdamW, lr 0.1, weight decay 0.1, batch 1).
- P4D-N (`mode: n`): 16 free tokens, started at random vocabulary tokens, replace P entirely.
- P4D-K (`mode: k`): P's own tokens stay, one learnable token before them and one after every 3.

Where we differ from the authors' code (../shared/papers/attacks-reference-notes.md §3), and why:
- No CLIP selection: they draw an image every 50 steps and keep the prompt whose image is closest
  (CLIP ViT-H-14) to the target image; no such model is available offline, so the typed prompt is the
  projection at the budget's last step, judged by the evaluation's detector like every other attack.
- "Ideal" prompts (unsafe on the base, safe on the edited model) are not pre-selected: every target
  prompt is attacked, as the other attacks do; a prompt the edit never erased counts as recovered.
- Timesteps are drawn uniformly from [0, T) (T = 1,000), as theirs; their 3,000 steps are our largest
  budget when the budget curve asks for it. With several text encoders (SDXL) the nearest token is
  judged on the concatenated rows, and each table takes its own row of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from erasekit.core import patch as patching
from erasekit.core.noising import add_noise
from erasekit.core.tokens import TokenSlots, decode, free_placeholders, nearest_tokens, word_vocabulary
from erasekit.errors import ErasekitError
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

CHUNK = 50  # base-model targets computed this many steps ahead (patches off), then the attack goes on


@dataclass
class P4DAttack:
    steps: int = 1000  # AdamW steps (the authors: 3,000)
    mode: str = "n"  # n: free tokens replace the prompt; k: tokens inserted into it
    tokens: int = 16  # P4D-N's free tokens
    every: int = 3  # P4D-K: one learnable token per this many of the prompt's tokens
    lr: float = 0.1
    weight_decay: float = 0.1
    batch_size: int = 1  # noisy latents per target prompt per step
    seed: int = 0

    name = "p4d"
    budget_field = "steps"

    def __post_init__(self) -> None:
        if self.mode not in ("n", "k"):
            raise ErasekitError(f"p4d mode must be 'n' (free tokens) or 'k' (inserted tokens), got {self.mode!r}")

    def templates(self, tok, prompts: Sequence[str], slot_count: int) -> list[list[int]]:
        """Per prompt the token ids of P*, slot j written as −1 − j."""
        if self.mode == "n":
            return [[-1 - j for j in range(slot_count)] for _ in prompts]
        out = []
        for prompt in prompts:
            ids = tok(prompt, add_special_tokens=False).input_ids
            row, j = [-1], 1
            for i, token in enumerate(ids):
                row.append(token)
                if (i + 1) % self.every == 0:
                    row.append(-1 - j)
                    j += 1
            out.append(row)
        return out

    def slot_count(self, tok, prompts: Sequence[str]) -> int:
        if self.mode == "n":
            return self.tokens
        return max(1 + len(tok(p, add_special_tokens=False).input_ids) // self.every for p in prompts)

    def run(self, inputs: AttackInputs, budgets: Sequence[int]) -> list[AttackOutcome]:
        budgets = check_budgets(budgets)
        model, tok = inputs.model, inputs.model.tokenizer
        vocab = torch.tensor(word_vocabulary(tok, inputs.excluded()))
        k = self.slot_count(tok, inputs.prompts)
        slot_ids = free_placeholders(tok, k, inputs.prompts)
        templates = self.templates(tok, inputs.prompts, k)

        def typed(row: list[int], chosen: Sequence[int]) -> str:
            return decode(tok, [chosen[-1 - i] if i < 0 else i for i in row])

        texts = [typed(row, slot_ids) for row in templates]
        latents = base_latents(inputs).to(model.device)
        n_prompts = latents.shape[0]
        with torch.no_grad():
            cond = model.encode(inputs.prompts)  # E(P) on the base model (patches are applied only below)
        slots = TokenSlots(model, slot_ids)
        tables = slots.table_rows(vocab.to(model.device))
        joint = torch.cat(list(tables.values()), dim=-1)
        gen = torch.Generator().manual_seed(self.seed + 1)
        start = torch.randint(len(vocab), (n_prompts, k), generator=gen).to(model.device)
        soft = {name: table[start].clone().requires_grad_(True) for name, table in tables.items()}
        optimizer = torch.optim.AdamW(list(soft.values()), lr=self.lr, weight_decay=self.weight_decay)
        targets: list[Noised] = []

        def nearest() -> torch.Tensor:
            rows = torch.cat([soft[name].detach() for name in tables], dim=-1).reshape(-1, joint.shape[-1])
            return torch.tensor(nearest_tokens(joint, rows, set())).reshape(n_prompts, k)

        def vectors() -> dict[str, torch.Tensor]:
            picked = nearest().to(model.device)
            return {name: s + (tables[name][picked] - s).detach() for name, s in soft.items()}

        @torch.no_grad()
        def base_targets(gen: torch.Generator) -> list[Noised]:
            """The next CHUNK steps' noisy latents and the *base* model's predictions under P there."""
            with patching.removed_temporarily(model, inputs.patches):
                chunk = []
                for _ in range(CHUNK):
                    owners, z0, noise = clean_batch(latents, self.batch_size, gen)
                    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(owners),),
                                      generator=gen).to(model.device)
                    x_t = add_noise(model.scheduler, z0, noise, t)
                    target = model.eps(x_t, t, cond[owners.to(cond.device)][None])[0]
                    chunk.append(Noised(x_t, t, target, owners))
                return chunk

        def batch(step: int, gen: torch.Generator) -> Noised:
            if step % CHUNK == 0:
                targets[:] = base_targets(gen)
            return targets[step % CHUNK]

        def discrete() -> list[str]:
            picked = vocab[nearest()].tolist()
            return [typed(row, chosen) for row, chosen in zip(templates, picked, strict=True)]

        marks = optimise_slots(inputs, slots, texts, vectors, optimizer, batch, budgets, discrete,
                               seed=self.seed, description=f"{self.name}-{self.mode}")
        return outcomes(inputs, marks)
