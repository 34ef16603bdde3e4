"""What the prompt attacks and robust erasure share: the vocabulary an attack may type, placeholder
slots whose embeddings an attack sets from its own variables, and the nearest-token and simplex
projections.

A slot is a token id the attacked texts carry at the positions the attack controls; while a
`TokenSlots` is active, every text encoder's token-embedding lookup returns the attack's vector there
instead of the table's row, one vector per (owner row, slot), with gradients to the attack's variables.
The tables themselves never change, so the model is untouched whatever the attack does.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from erasekit.core.scopes import TOKEN_EMBEDDING, named_parameters
from erasekit.errors import ErasekitError


def token_tables(model) -> dict[str, torch.nn.Embedding]:
    """Every text encoder's token-embedding module that reads the first tokenizer's ids, by parameter name."""
    if "embedding" not in model.family.scopes:
        raise ErasekitError(f"the prompt attacks set token embeddings of the first tokenizer, which "
                            f"{model.family.name} models do not read their sequence from")
    modules = model.named_modules()
    tables = {}
    for name in named_parameters(modules):
        if TOKEN_EMBEDDING.match(name):
            component, _, rest = name.partition(".")
            tables[name] = modules[component].get_submodule(rest.rpartition(".")[0])
    return tables


def special_ids(tokenizer) -> set[int]:
    return {i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                        tokenizer.unk_token_id) if i is not None}


def concept_ids(tokenizer, concept_word: str) -> set[int]:
    return set(tokenizer(concept_word, add_special_tokens=False).input_ids)


def word_vocabulary(tokenizer, exclude: set[int]) -> list[int]:
    """Ids of whole-word tokens (CLIP's `</w>` ending), which decode to text that tokenizes back to the same
    ids, so a discrete attack's prompt is exactly what anyone could type; `exclude` left out."""
    vocab = tokenizer.get_vocab()
    words = sorted(i for t, i in vocab.items() if t.endswith("</w>") and i not in exclude | special_ids(tokenizer))
    if not words:
        raise ErasekitError("the tokenizer has no whole-word tokens an attack could type")
    return words


def decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def free_placeholders(tokenizer, k: int, texts: Sequence[str]) -> list[int]:
    """k single-letter token ids that appear in none of `texts`: the slots' ids in the attacked texts."""
    used = {i for text in texts for i in tokenizer(text, add_special_tokens=False).input_ids}
    found = []
    for letter in "zqxjkvwygfbpmhudclnrtsoiea" + string.digits:
        ids = tokenizer(letter, add_special_tokens=False).input_ids
        if len(ids) == 1 and ids[0] not in used and ids[0] not in found:
            found.append(ids[0])
        if len(found) == k:
            return found
    raise ErasekitError(f"found only {len(found)} free single-token placeholders, the attack needs {k}")


class TokenSlots:
    """While active, embedding lookups of the slot ids return `vectors[table][owners[row], slot]`."""

    def __init__(self, model, slot_ids: Sequence[int]) -> None:
        self.tables = token_tables(model)
        self.slot_ids = list(slot_ids)
        self.vectors: dict[str, torch.Tensor] | None = None
        self.owners: torch.Tensor | None = None
        self._handles: list = []

    def set(self, vectors: dict[str, torch.Tensor], owners: torch.Tensor) -> None:
        """vectors: per table (owners' range, slots, width); owners: the variable row of each encoded text."""
        self.vectors, self.owners = vectors, owners

    def __enter__(self) -> TokenSlots:
        for name, module in self.tables.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.vectors = self.owners = None

    def _hook(self, name: str):
        def hook(module, args, out):
            if self.vectors is None:
                return out
            ids = args[0]
            rows = self.vectors[name][self.owners.to(ids.device)].to(out.dtype)  # (B, slots, D)
            if rows.shape[0] != ids.shape[0]:
                raise RuntimeError(f"{rows.shape[0]} slot owners for a batch of {ids.shape[0]} texts")
            for j, slot in enumerate(self.slot_ids):
                out = torch.where((ids == slot)[..., None], rows[:, j : j + 1], out)
            return out

        return hook

    def table_rows(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each table's (base) rows of `ids`, any shape → shape + (width,)."""
        return {name: module.weight.detach()[ids] for name, module in self.tables.items()}


def nearest_tokens(weight: torch.Tensor, rows: torch.Tensor, exclude: set[int]) -> list[int]:
    """For each row, the vocabulary id whose embedding is closest in cosine similarity."""
    sims = F.normalize(rows, dim=-1) @ F.normalize(weight, dim=-1).T
    if exclude:
        sims[:, sorted(exclude)] = -float("inf")
    return sims.argmax(-1).tolist()


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each last-axis vector onto the probability simplex (sort-based, exact;
    UnlearnDiffAtk's bisection finds the same point)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = u.cumsum(-1) - 1
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    support = (u - cumulative / k > 0).sum(-1, keepdim=True)
    theta = cumulative.gather(-1, support - 1) / support.to(v.dtype)
    return (v - theta).clamp_min(0)
