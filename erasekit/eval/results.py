"""Benchmark result documents in the one format of BENCHMARKS.md (schema 1)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import erasekit
from erasekit.core import files

SCHEMA = 1


def git_commit(repo: Path | None = None) -> str:
    """The commit the numbers are measured at; '+dirty' when tracked code differs from it.

    Result files (benchmarks/results/) and prose (*.md, docs/) do not count: a benchmark started
    while another one's results or write-up await their commit still runs the committed code.
    """
    cwd = repo or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        code_only = [".", ":(exclude)benchmarks/results", ":(exclude)docs", ":(exclude)*.md"]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *code_only], cwd=cwd,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# The commit a benchmark's code came from is the one checked out when it started, not when it ends.
_GIT_AT_IMPORT = git_commit()


def device_description() -> str:
    parts = [f"cpu: {os.cpu_count()} cores, torch threads {torch.get_num_threads()} ({platform.machine()})"]
    if torch.cuda.is_available():
        parts.append(f"cuda: {torch.cuda.get_device_name(0)}")
    return " | ".join(parts)


def command_line() -> str:
    """The command that reproduces a result, with the script path relative to the repo."""
    argv = list(sys.argv)
    root = Path(__file__).resolve().parents[2]
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(root))
    except ValueError:
        argv[0] = Path(argv[0]).name
    return "python " + " ".join(shlex.quote(a) for a in without_out_option(argv))


def without_out_option(argv: list[str]) -> list[str]:
    """argv less `--out DIR`: where a result was written is not part of reproducing it (and would
    put a machine path into the file)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return kept


def write_result(
    name: str,
    runs: list[dict[str, Any]],
    metrics: dict[str, Any] | None = None,
    out_dir: str | os.PathLike = "benchmarks/results",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write benchmarks/results/<name>.json atomically."""
    document = {
        "benchmark": name,
        "schema": SCHEMA,
        "erasekit_version": erasekit.__version__,
        "git": _GIT_AT_IMPORT,
        "command": command_line(),
        "device": device_description(),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": runs,
        "metrics": metrics or {},
        **(extra or {}),
    }
    return files.write_json(Path(out_dir) / f"{name}.json", document)
