"""Ring-A-Bell (Tsai et al., ICLR 2024): a black-box attack that never touches the edited model.

A concept vector from the base text encoder, c = mean_i [E(p_i⁺) − E(p_i⁻)] over the whole sequence
(padding included), where p_i⁺ are the target prompts and p_i⁻ the same prompts without the concept
word (or with `contrast` in its place). For each target prompt P the attack wants a prompt whose
encoding is ẽ = E(P) + η·c, and searches for K real tokens with a genetic algorithm: fitness
‖ẽ − E(candidate)‖²_F (lower is better), population 200, the best 100 kept each generation, single-
point crossover (p 0.5, random partner, two children), one-position mutation (p 0.25). The typed prompt
is the best candidate's K tokens alone.

Where we differ from the authors' code (../shared/papers/attacks-reference-notes.md §2), and why:
- Pairs: theirs are hand-made nudity / clothed prompt pairs; ours are the evaluation's target prompts
  and the same prompts without the concept word, the pairing any concept has.
- The vocabulary is the whole-word tokens without the concept word's own (theirs: any id), so the
  found prompt types back to itself and cannot simply spell the erased word.
- 3,000 generations are their budget; ours is the budget curve's (e.g. 100 / 300 / 1,000), the best
  candidate so far recorded at each. K is capped by the tokenizer's length (the toy world's 24).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from erasekit.core import files
from erasekit.core.data import model_fingerprint
from erasekit.core.tokens import decode, word_vocabulary
from erasekit.eval.attacks.base import AttackInputs, AttackOutcome, check_budgets, outcomes

ENCODE_BATCH = 256


@dataclass
class RingABellAttack:
    generations: int = 1000  # the authors': 3,000
    tokens: int = 16  # K
    strength: float = 3.0  # η (the authors: 3 for nudity, 0.9 for Van Gogh in RECE's reproduction)
    population: int = 200
    keep: int = 100
    crossover: float = 0.5
    mutation: float = 0.25
    contrast: str = ""  # what replaces the concept word in the prompts without it ("": the word is dropped)
    seed: int = 0

    name = "ring-a-bell"
    budget_field = "generations"

    @torch.no_grad()
    def encode(self, model, texts: list[str]) -> torch.Tensor:
        return torch.cat([model.encode(texts[i : i + ENCODE_BATCH]).hidden for i in range(0, len(texts),
                                                                                          ENCODE_BATCH)])

    def run(self, inputs: AttackInputs, budgets: Sequence[int]) -> list[AttackOutcome]:
        """The search never sees the patches, so its prompts are cached (under the evaluation's cache
        directory) by base model, prompts, settings and budgets, and shared by every method attacked."""
        budgets = check_budgets(budgets)
        cache = None
        if inputs.cache_dir is not None:
            key = json.dumps({"model": model_fingerprint(inputs.model), "prompts": inputs.prompts, "word":
                              inputs.concept_word, "attack": dataclasses.asdict(self), "budgets": budgets},
                             sort_keys=True)
            cache = Path(inputs.cache_dir) / self.name / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        marks = files.load_cached(cache, lambda p: [tuple(m) for m in json.loads(p.read_text())]) if cache else None
        if marks is None:
            marks = self.search(inputs, budgets)
            if cache is not None:
                files.write_json(cache, marks)
        return outcomes(inputs, marks)

    def search(self, inputs: AttackInputs, budgets: list[int]) -> list[tuple[int, list[str], float]]:
        """Per budget, the best candidate's text for each target prompt and the seconds spent so far."""
        model, tok = inputs.model, inputs.model.tokenizer
        vocab = torch.tensor(word_vocabulary(tok, inputs.excluded()))
        k = min(self.tokens, tok.model_max_length - 2)
        started = time.perf_counter()
        without = [" ".join(p.replace(inputs.concept_word, self.contrast).split()) for p in inputs.prompts]
        plus = self.encode(model, list(inputs.prompts))
        concept = (plus - self.encode(model, without)).mean(0)
        wanted = plus + self.strength * concept  # (P, L, D)
        n_prompts = len(inputs.prompts)
        gen = torch.Generator().manual_seed(self.seed)

        def fitness(ids: torch.Tensor) -> torch.Tensor:  # (P, M, K) → (P, M)
            texts = [decode(tok, row) for row in ids.reshape(-1, k).tolist()]
            hidden = self.encode(model, texts).reshape(n_prompts, ids.shape[1], *wanted.shape[1:])
            return (hidden - wanted[:, None]).pow(2).sum((2, 3)).cpu()

        def random_tokens(*shape: int) -> torch.Tensor:
            return vocab[torch.randint(len(vocab), shape, generator=gen)]

        population = random_tokens(n_prompts, self.population, k)
        scores = fitness(population)
        marks = []
        pairs = (self.population - self.keep + 1) // 2
        bar = tqdm(range(max(budgets)), desc=self.name, disable=not inputs.progress, leave=False)
        for generation in bar:
            order = scores.argsort(1)[:, : self.keep]
            parents = population.gather(1, order[..., None].expand(-1, -1, k))
            kept = scores.gather(1, order)
            choice = torch.randint(self.keep, (n_prompts, 2 * pairs), generator=gen)
            a = parents.gather(1, choice[:, :pairs, None].expand(-1, -1, k))
            b = parents.gather(1, choice[:, pairs:, None].expand(-1, -1, k))
            point = torch.randint(1, max(k, 2), (n_prompts, pairs, 1), generator=gen)
            crossed = torch.rand(n_prompts, pairs, 1, generator=gen) < self.crossover
            first = torch.arange(k) < point
            children = torch.cat([torch.where(crossed & ~first, b, a), torch.where(crossed & ~first, a, b)], 1)
            children = children[:, : self.population - self.keep].clone()
            mutate = torch.rand(children.shape[:2], generator=gen) < self.mutation
            position = torch.randint(k, children.shape[:2], generator=gen)
            fresh = random_tokens(*children.shape[:2])
            rows, cols = mutate.nonzero(as_tuple=True)
            children[rows, cols, position[rows, cols]] = fresh[rows, cols]
            population = torch.cat([parents, children], 1)
            scores = torch.cat([kept, fitness(children)], 1)
            bar.set_postfix(fitness=f"{scores.min(1).values.mean().item():.4g}")
            if generation + 1 in budgets:
                best = population[torch.arange(n_prompts), scores.argmin(1)]
                marks.append((generation + 1, [decode(tok, row) for row in best.tolist()],
                              time.perf_counter() - started))
        return marks
