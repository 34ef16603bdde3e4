"""Writing files so that no reader ever sees half of one.

Every file erasekit writes goes to a temporary name unique to this write, beside its target, and is
renamed into place only once complete: two processes sharing one cache directory can no longer rename
each other's half-written file into place (a fixed `<name>.tmp` allowed exactly that), and a write
that fails (a full disk, an interrupt) leaves nothing behind but what was there before.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from erasekit.errors import ErasekitError

log = logging.getLogger(__name__)
T = TypeVar("T")

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp / mkdtemp create private (0600 / 0700) entries; what we write gets the usual permissions.
_MODE_FILE, _MODE_DIR = 0o666 & ~_umask(), 0o777 & ~_umask()


def _disk_full(exc: BaseException) -> bool:
    # safetensors' Rust writer reports a full disk as text ("No space left on device (os error 28)").
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return True
    return "No space left on device" in str(exc) or "os error 28" in str(exc)


def _failed(exc: BaseException, path: Path) -> None:
    if _disk_full(exc):
        raise ErasekitError(f"no space left on the device while writing {path}; nothing was written") from exc


def _temporary_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, _MODE_FILE)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside `path` to write to; renamed onto `path` when the block ends, removed
    if it raises (a full disk becomes one ErasekitError line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _failed(exc, path)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary directory beside `path` to fill; renamed onto `path` (which must be absent or an
    empty directory) when the block ends, removed with its contents if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(_MODE_DIR)
    try:
        yield tmp
        if path.is_dir():
            path.rmdir()  # only an empty directory: callers refuse a non-empty target before writing
        tmp.rename(path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _failed(exc, path)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, document: Any) -> Path:
    return write_text(path, json.dumps(document, indent=2) + "\n")


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                      metadata: dict[str, str] | None = None) -> Path:
    """Tensors as one .safetensors file, serialised in memory first so that a full disk surfaces as an
    OSError of our own write (the patches, caches and checkpoints this writes are small)."""
    from safetensors.torch import save

    return write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def load_cached(path: Path, load: Callable[[Path], T]) -> T | None:
    """A cache entry, or None when absent; an entry that fails to load is dropped (to be recomputed),
    never trusted."""
    if not path.exists():
        return None
    try:
        return load(path)
    except Exception as exc:  # noqa: BLE001 -- any unreadable entry is the same case: recompute it
        log.warning("dropping unreadable cache entry %s (%s)", path, exc)
        path.unlink(missing_ok=True)
        return None
