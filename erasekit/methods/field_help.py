"""One-line help for every method config field (`erasekit ls config METHOD` prints it).

Each method's config module sets `<Config>.HELP = COMMON | {...}`; a contract test checks that every
field of every registered method has a line.
"""

from __future__ import annotations

import dataclasses

COMMON: dict[str, str] = {
    "seed": "seed of the method's own randomness (noise, timesteps, image draws)",
    "checkpoint_every": "write a resumable checkpoint every N steps to --work (0: never)",
    "grad_clip": "clip the gradient norm to this (null: no clipping)",
    "weight_decay": "AdamW weight decay",
    "batch_size": "training examples per optimisation step (the loss is their mean)",
    "pool_size": "trajectories of the frozen model kept in the pool examples are drawn from (1: a fresh one per step)",
    "pool_refresh": "redraw the trajectory pool every N steps",
    "steps": "optimisation steps",
    "lr": "learning rate",
    "scope": "which weights train: a parameter scope (`erasekit ls scopes`)",
    "n_images": "images drawn from the base model to train on",
    "image_steps": "sampling steps of those training images",
    "image_guidance": "classifier-free guidance of those training images",
    "sampling_steps": "sampling steps of the trajectories training draws x_t from",
}


def field_help(config_class: type, name: str) -> str:
    """The field's one line, or '' where a config has none."""
    return getattr(config_class, "HELP", {}).get(name, "")


def missing_help(config_class: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class) if not field_help(config_class, f.name)]
