"""Reading user YAML files (requests, suites) with one-line errors naming the file and line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from erasekit.errors import ErasekitError


def read_mapping(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; missing file, bad YAML or a non-mapping is one clear error."""
    path = Path(path)
    if not path.exists():
        raise ErasekitError(f"{what} file {path} does not exist")
    if not path.is_file():
        raise ErasekitError(f"{what} file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ErasekitError(f"cannot read {what} file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ErasekitError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if not isinstance(data, dict):
        raise ErasekitError(f"{path}: a {what} file must hold a mapping")
    return data
