"""The one optimisation loop every method (and the toy world's training) reuses.

AdamW with warm-up, gradient clipping, an optional EMA of the weights, tqdm
progress on stderr, periodic callbacks for evaluation or early stopping,
atomic safetensors checkpoints with exact resume, and a NaN/inf guard that
stops before a bad update touches the weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from erasekit.core import files
from erasekit.errors import ErasekitError

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.safetensors"


class TrainingDiverged(ErasekitError):
    """The loss or the gradient became NaN/inf; the weights hold the last good step."""


@dataclass
class TrainerConfig:
    steps: int
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float | None = 1.0
    warmup_steps: int = 0
    ema_decay: float | None = None
    checkpoint_every: int = 0
    callback_every: int = 0
    seed: int = 0
    progress: bool = True
    description: str = "training"

    @classmethod
    def for_method(cls, config: Any, description: str) -> TrainerConfig:
        """The trainer settings a method's config carries (its fields named as here: steps, lr,
        weight_decay, grad_clip, ema_decay, seed, checkpoint_every, ...); the rest keep their defaults."""
        values = dataclasses.asdict(config)
        own = {f.name for f in dataclasses.fields(cls)} - {"description"}
        return cls(description=description, **{k: values[k] for k in own if k in values})

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.callback_every < 0:
            raise ValueError("warmup_steps, checkpoint_every and callback_every must be >= 0")


@dataclass
class TrainState:
    """What a finished (or stopped) run reports."""

    step: int
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False


# A loss function gets the step index and the trainer's generator, so that every random draw
# it makes is part of the checkpointed state and a resumed run repeats it exactly.
LossFn = Callable[[int, torch.Generator], torch.Tensor]
# A callback gets the step just finished and the trainer; returning True stops training.
Callback = Callable[[int, "Trainer"], bool | None]


class Trainer:
    def __init__(
        self,
        params: dict[str, torch.nn.Parameter],
        config: TrainerConfig,
        checkpoint_dir: str | os.PathLike | None = None,
        callback: Callback | None = None,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        if not params:
            raise ErasekitError("nothing to train: the parameter selection is empty")
        self.params = params
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.callback = callback
        self.after_step = after_step
        for p in params.values():
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            list(params.values()), lr=config.lr, betas=config.betas, eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        self.ema: dict[str, torch.Tensor] | None = (
            {k: p.detach().clone() for k, p in params.items()} if config.ema_decay is not None else None
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.losses: list[float] = []
        from erasekit.core.distributed import processes

        # Under `accelerate launch`: every process draws the same examples (one generator stream) and trains
        # on its share of them (erasekit.core.distributed.share); gradients and losses are averaged across
        # processes each step, so the weights stay identical and equal the one-process run's.
        self.world = processes()

    def _average_across_processes(self, loss: torch.Tensor) -> float:
        """All-reduce (mean) the gradients and the loss; the mean loss is what every process logs."""
        value = loss.detach().float().reshape(1)
        if self.world.num_processes == 1:
            return float(value)
        from accelerate.utils import reduce

        for p in self.params.values():  # every process reduces every tensor, in the same order
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(reduce(p.grad, reduction="mean"))
        return float(reduce(value, reduction="mean"))

    def _check_in_sync(self) -> None:
        """Every process ends with the same weights (a diverged process would write another patch)."""
        if self.world.num_processes == 1:
            return
        from accelerate.utils import gather_object

        total = float(sum(p.detach().double().sum() for p in self.params.values()))
        sums = gather_object([total])
        if max(sums) - min(sums) > 1e-6 * max(1.0, abs(total)):
            raise ErasekitError(f"data-parallel processes diverged: weight sums {sums}")

    # ------------------------------------------------------------------ loop
    def fit(self, loss_fn: LossFn) -> TrainState:
        self._maybe_resume()
        cfg = self.config
        bar = tqdm(
            total=cfg.steps, initial=self.step, desc=cfg.description, dynamic_ncols=True,
            disable=not cfg.progress or not self.world.is_main_process,
        )
        stopped = False
        try:
            while self.step < cfg.steps:
                loss = loss_fn(self.step, self.generator)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # a non-finite loss is refused below, before any weight moves
                value = self._average_across_processes(loss)
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"loss became {value} at step {self.step}; weights kept from step {self.step} "
                        "(lower the learning rate or check the inputs)"
                    )
                self._check_and_clip_gradients()
                for group in self.optimizer.param_groups:
                    group["lr"] = self._lr_at(self.step)
                self.optimizer.step()
                if self.after_step is not None:
                    self.after_step()
                self._update_ema()
                self.step += 1
                self.losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}")
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.callback and cfg.callback_every and self.step % cfg.callback_every == 0:
                    if self.callback(self.step, self):
                        stopped = True
                        break
        finally:
            bar.close()
        if self.checkpoint_dir is not None and cfg.checkpoint_every:
            self.save_checkpoint()
        self._check_in_sync()
        return TrainState(step=self.step, losses=list(self.losses), stopped_early=stopped)

    def _lr_at(self, step: int) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * min(1.0, (step + 1) / warm) if warm else self.config.lr

    def _check_and_clip_gradients(self) -> None:
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not grads:
            raise ErasekitError("the loss does not depend on any trainable parameter")
        clip = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), clip)
        if not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"gradient norm became {float(norm)} at step {self.step}; weights kept")

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        # Warm-up of the decay keeps early EMA weights from being dominated by the random init.
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for name, p in self.params.items():
            self.ema[name].lerp_(p.detach(), 1.0 - decay)

    def ema_state(self) -> dict[str, torch.Tensor]:
        """EMA weights if enabled, else the live weights (detached copies)."""
        source = self.ema if self.ema is not None else {k: p.detach() for k, p in self.params.items()}
        return {k: v.clone() for k, v in source.items()}

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write the run's state (one process writes; the others hold the same weights)."""
        if self.checkpoint_dir is None or not self.world.is_main_process:
            return None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, p in self.params.items():
            tensors[f"param/{name}"] = p.detach().contiguous().clone()
        if self.ema is not None:
            for name, v in self.ema.items():
                tensors[f"ema/{name}"] = v.contiguous().clone()
        opt_state = self.optimizer.state_dict()
        scalars: dict[str, dict[str, float]] = {}
        for idx, state in opt_state["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tensors[f"optim/{idx}/{key}"] = value.contiguous().clone()
                else:
                    scalars.setdefault(str(idx), {})[key] = float(value)
        tensors["rng"] = self.generator.get_state()
        metadata = {
            "step": str(self.step),
            "losses": json.dumps(self.losses),
            "optim_scalars": json.dumps(scalars),
            "config": json.dumps(asdict(self.config)),
        }
        path = files.write_safetensors(self.checkpoint_dir / CHECKPOINT_NAME, tensors, metadata=metadata)
        log.debug("checkpoint at step %d -> %s", self.step, path)
        return path

    def _maybe_resume(self) -> None:
        if self.checkpoint_dir is None:
            return
        path = self.checkpoint_dir / CHECKPOINT_NAME
        loaded = files.load_cached(path, _read_checkpoint)  # an unreadable checkpoint: start afresh
        if loaded is None:
            return
        metadata, tensors = loaded
        missing = [n for n in self.params if f"param/{n}" not in tensors]
        if missing:
            raise ErasekitError(f"checkpoint {path} does not match the trainable parameters (missing {missing[0]})")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(tensors[f"param/{name}"])
            if self.ema is not None:
                for name in self.ema:
                    self.ema[name] = tensors.get(f"ema/{name}", self.params[name].detach().clone()).clone()
        scalars = json.loads(metadata["optim_scalars"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, idx, name = key.split("/", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, values in scalars.items():
            for name, value in values.items():
                state.setdefault(int(idx), {})[name] = torch.tensor(value)
        opt_state = self.optimizer.state_dict()
        opt_state["state"] = state
        self.optimizer.load_state_dict(opt_state)
        self.generator.set_state(tensors["rng"])
        self.step = int(metadata["step"])
        self.losses = json.loads(metadata["losses"])
        log.info("resumed from %s at step %d", path, self.step)


def _read_checkpoint(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    return metadata, load_file(str(path))
