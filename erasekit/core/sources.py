"""Where a model argument points: a diffusers directory, a hub id, a single file or a built-in toy world.

Light on purpose (no torch, no diffusers): the CLI checks a model argument, its family and its
defaults before any weights load.
"""

from __future__ import annotations

import os
from pathlib import Path

from erasekit.errors import ErasekitError

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
TOYWORLD = "toyworld"
# The built-in pipelines under models/: the toy world every table is measured on; the same world with a
# 256-wide text encoder, SD's ratio of prompt tokens to text width (docs/methods/sepme.md); and the
# same world fine-tuned to v-prediction, SD 2.x 768's parametrisation (docs/families.md).
TOYWORLD_VARIANTS = (TOYWORLD, "toyworld-wide", "toyworld-v", "toyworld-mmdit")


def toyworld_dir(name: str = TOYWORLD) -> Path:
    """A shipped toy-world pipeline directory ('toyworld' is overridable with ERASEKIT_TOYWORLD)."""
    env = os.environ.get("ERASEKIT_TOYWORLD") if name == TOYWORLD else None
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models" / name


def resolve_source(source: str | os.PathLike) -> str | Path:
    """Map a user's model argument to a local path or a hub id, refusing pickles up front."""
    text = str(source)
    if not text.strip():
        raise ErasekitError("model must not be empty: give a diffusers directory, a hub id, a .safetensors file "
                            "or 'toyworld'")
    if text in TOYWORLD_VARIANTS:
        path = toyworld_dir(text)
        if not (path / "model_index.json").exists():
            raise ErasekitError(f"the toy-world model {text!r} is missing at {path}; run `erasekit toyworld train`")
        return path
    path = Path(text).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ErasekitError(
            f"refusing to load pickle checkpoint {path.name}: pickles can run arbitrary code; "
            "convert it to .safetensors (e.g. with diffusers' conversion scripts) and pass that file"
        )
    if path.exists():
        if path.is_dir() and not (path / "model_index.json").exists():
            raise ErasekitError(f"{path} is a directory but not a diffusers pipeline (no model_index.json)")
        if path.is_file() and path.suffix.lower() != ".safetensors":
            raise ErasekitError(f"unsupported model file {path.name}: expected a .safetensors checkpoint")
        return path
    if path.suffix or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ErasekitError(f"model {text!r} not found: not a local path, and not a hub id of the form owner/name")
    return text
