"""What a denoiser reads from a prompt: the cross-attention context and, per family, pooled extras.

SD 1.x/2.x read one tensor (the text encoder's hidden states); SDXL also reads a pooled text
embedding and its size/crop micro-conditioning (`added_cond_kwargs`). Methods batch, index, stack
and expand conditions as they would a tensor of hidden states, so `Conditioning` does those
operations on every field at once, over the leading (batch) dimensions only. Methods that need
the per-token features themselves (UCE, SepME, FMN) read `hidden`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

_TOKEN_DIMS = 2  # hidden is (..., L, D): the trailing dims that are not batch dims


@dataclass
class Conditioning:
    hidden: torch.Tensor  # (..., L, D) cross-attention context
    # (..., d) tensors the family passes to its denoiser besides the context, by the family's names
    # (SDXL: text_embeds = pooled CLIP-G, time_ids = original size, crop, target size)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    # ------------------------------------------------------------ tensor-like
    @property
    def shape(self) -> torch.Size:
        return self.hidden.shape

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hidden.dtype

    def dim(self) -> int:
        return self.hidden.dim()

    def __len__(self) -> int:
        return len(self.hidden)

    def _map(self, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Conditioning:
        """Apply fn(tensor, number of its trailing non-batch dims) to every field."""
        return Conditioning(fn(self.hidden, _TOKEN_DIMS), {k: fn(v, 1) for k, v in self.extras.items()})

    def __getitem__(self, index) -> Conditioning:
        """Index the batch dimensions (ints, slices, None, index tensors), as on the hidden states."""
        if index is Ellipsis or (isinstance(index, tuple) and any(i is Ellipsis for i in index)):
            raise IndexError("Conditioning is indexed over its batch dimensions only; index .hidden for tokens")
        return self._map(lambda t, _: t[index])

    def expand(self, *sizes: int) -> Conditioning:
        """Expand as `hidden.expand(*sizes)` would; sizes ends with the hidden states' (L, D)."""
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
            sizes = tuple(sizes[0])
        leading = tuple(sizes[:-_TOKEN_DIMS])
        return self._map(lambda t, trailing: t.expand(*leading, *t.shape[t.dim() - trailing:]))

    def expand_as(self, other: Conditioning | torch.Tensor) -> Conditioning:
        return self.expand(*other.shape)

    def flatten_batch(self) -> Conditioning:
        """All batch dimensions folded into one, (N, L, D)."""
        return self._map(lambda t, trailing: t.reshape(-1, *t.shape[t.dim() - trailing:]))

    def to(self, *args, **kwargs) -> Conditioning:
        return self._map(lambda t, _: t.to(*args, **kwargs))

    def float(self) -> Conditioning:
        return self._map(lambda t, _: t.float())

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch.stack / torch.cat over conditions, field by field (along a batch dimension)."""
        kwargs = kwargs or {}
        if func in (torch.stack, torch.cat):
            items, dim = args[0], kwargs.get("dim", args[1] if len(args) > 1 else 0)
            return combine(items, dim, func)
        return NotImplemented


def combine(items: Sequence[Conditioning], dim: int, func=torch.stack) -> Conditioning:
    """torch.stack or torch.cat of conditions along batch dimension `dim` (counted from the front)."""
    if dim < 0:
        raise ValueError("conditions are stacked along a batch dimension counted from the front")
    items = [as_conditioning(c) for c in items]
    keys = set(items[0].extras)
    if any(set(c.extras) != keys for c in items):
        raise ValueError("cannot combine conditions with different extras")
    hidden = func([c.hidden for c in items], dim=dim)
    return Conditioning(hidden, {k: func([c.extras[k] for c in items], dim=dim) for k in sorted(keys)})


def as_conditioning(cond: Conditioning | torch.Tensor) -> Conditioning:
    """A bare hidden-state tensor is the condition of a family that reads nothing else (SD)."""
    return cond if isinstance(cond, Conditioning) else Conditioning(cond)
