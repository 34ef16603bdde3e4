"""An edit session: train a scope of a model, keep a frozen teacher, hand back a Patch.

Every method that fine-tunes works the same way: select the scope, remember the
base tensors (they are the frozen teacher θ*), train, turn the difference into a
patch, and put the base weights back, so that the caller's model is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from erasekit.core import patch as patching
from erasekit.core.patch import Patch
from erasekit.core.scopes import Selection, named_parameters, select
from erasekit.core.trainer import Callback, Trainer, TrainerConfig


@dataclass
class RunOptions:
    """How a method runs, as opposed to what it computes: checkpoints and progress."""

    checkpoint_dir: Path | None = None
    progress: bool = True
    cache_dir: Path | None = None  # generated training images, keyed by model fingerprint
    callback: Callback | None = None  # called every `callback_every` training steps (e.g. a Timeline)
    callback_every: int = 0
    # recompute the trained networks' activations in backward instead of keeping them (memory for time)
    gradient_checkpointing: bool = False


class EditSession:
    def __init__(self, model, scope: str, token_ids: Sequence[int] | None = None) -> None:
        """Trained tensors become float32 master copies for the session (the optimizer steps in float32
        on a bf16 / fp16 model; the networks cast them per operation under the model's autocast) and go
        back to the model's dtype, at their base values, when it ends."""
        self.model = model
        self.selection: Selection = select(model.named_modules(), scope, token_ids=token_ids,
                                          scopes=model.family.scopes)
        self.dtypes = {n: p.dtype for n, p in self.selection.params.items()}
        for p in self.selection.params.values():
            p.data = p.data.float()
        self.base = {n: p.detach().clone() for n, p in self.selection.params.items()}
        self.checkpointed: list[torch.nn.Module] = []
        # The patch fits the unpatched base; it remembers the patches the model carries while training.
        self.base_fingerprint = patching.base_fingerprint(model, self.base)
        self.made_on = patching.made_on(model)
        # a text encoder's tensors train: the student's conditions are then encoded inside the graph every step
        self.encoder_trains = any(not n.startswith(f"{model.family.denoiser}.") for n in self.params)

    def __enter__(self) -> EditSession:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    @property
    def params(self) -> dict[str, torch.nn.Parameter]:
        return self.selection.params

    def student_condition(self, texts: Sequence[str], frozen):
        """What the student reads for `texts`: `frozen` (their encodings taken before training, which the frozen
        model reads too) unless a text encoder trains, then E_θ(texts) encoded inside the graph."""
        return self.model.encode(list(texts)) if self.encoder_trains else frozen

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep rows outside the embedding scope's tokens at their base values (weight decay moves them)."""
        mask = self.selection.row_mask
        if mask is None:
            return
        for name, p in self.params.items():
            p.copy_(self.base[name] * (1 - mask) + p * mask)

    def trainer(self, config: TrainerConfig, run: RunOptions, callback: Callback | None = None) -> Trainer:
        """The shared trainer over this session's parameters; checkpoints only when the run has a directory;
        the run's callback (if any) every run.callback_every steps unless the method brings its own."""
        if run.gradient_checkpointing:
            self.enable_gradient_checkpointing()
        if run.checkpoint_dir is None:
            config = dataclasses.replace(config, checkpoint_every=0)
        config = dataclasses.replace(config, progress=run.progress and config.progress)
        if callback is None and run.callback is not None:
            callback = run.callback
            config = dataclasses.replace(config, callback_every=run.callback_every)
        return Trainer(self.params, config, checkpoint_dir=run.checkpoint_dir, callback=callback,
                       after_step=self.after_step)

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint every component that has trained tensors (diffusers' and transformers' own switch)."""
        for prefix, module in self.model.named_modules().items():
            if module in self.checkpointed or not any(n.startswith(prefix + ".") for n in self.params):
                continue
            enable = getattr(module, "enable_gradient_checkpointing", None) or module.gradient_checkpointing_enable
            enable()
            self.checkpointed.append(module)

    def teacher_denoiser(self) -> dict[str, torch.Tensor]:
        """The frozen θ* values of the trained denoiser tensors, named as inside the denoiser."""
        return self.denoiser_part(self.base)

    def denoiser_part(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Those of `tensors` (named as patches name them) that belong to the denoiser, named inside it."""
        prefix = f"{self.model.family.denoiser}."
        return {n.removeprefix(prefix): t for n, t in tensors.items() if n.startswith(prefix)}

    def to_patch(
        self,
        method: str,
        config: Any,
        concepts: Sequence[str],
        info: dict | None = None,
        edited: dict[str, torch.Tensor] | None = None,
    ) -> Patch:
        """The patch from the base to `edited` (default: the live trained weights)."""
        edited = edited if edited is not None else {n: p.detach() for n, p in self.params.items()}
        cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        info = {"trainable_params": self.selection.trainable_count, **self.made_on, **(info or {})}
        return Patch.from_weights(self.base, edited, method, cfg, concepts, info=info,
                                  base_fingerprint=self.base_fingerprint, family=self.model.family.name)

    @torch.no_grad()
    def restore(self) -> None:
        for handle in self.selection.hooks:
            handle.remove()
        self.selection.hooks.clear()
        for name, p in self.params.items():
            p.data = self.base[name].to(self.dtypes[name]).clone()
        for module in self.checkpointed:
            disable = getattr(module, "disable_gradient_checkpointing", None) or module.gradient_checkpointing_disable
            disable()
        self.checkpointed.clear()
        for p in named_parameters(self.model.named_modules()).values():
            p.requires_grad_(False)
            p.grad = None
