"""Atomic writes: unique temporary names, a full disk ends in one line, bad cache entries are recomputed."""

import builtins
import errno
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from erasekit.cli.main import main
from erasekit.core import files
from erasekit.core.data import ImageCache
from erasekit.core.patch import Patch
from erasekit.errors import ErasekitError


def _patch(seed: int, concept: str = "circle") -> Patch:
    gen = torch.Generator().manual_seed(seed)
    base = {"unet.a.weight": torch.zeros(8, 8)}
    return Patch.from_weights(base, {"unet.a.weight": torch.randn(8, 8, generator=gen)}, "test", {"seed": seed},
                              [concept])


class _DiskFull:
    """open() whose writes store half the bytes and then fail as a full disk does."""

    def __init__(self, path, mode="r", *args, **kwargs):
        self._file = builtins.open(path, mode, *args, **kwargs)

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def test_temporary_names_are_unique_per_write(tmp_path):
    target = tmp_path / "entry.safetensors"
    with files.atomic_path(target) as first, files.atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("one")
        second.write_text("two")
    assert target.read_text() == "one"  # the inner block ends first; the outer write, renamed last, wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.safetensors"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    files.write_json(target, {"old": 1})
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert files.load_cached(target, lambda p: p.read_text()) == '{\n  "old": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_full_disk_is_one_error_and_nothing_half_written(tmp_path, monkeypatch):
    old = _patch(0).save(tmp_path / "p.safetensors")
    before = old.read_bytes()
    monkeypatch.setattr(files, "open", _DiskFull, raising=False)
    with pytest.raises(ErasekitError, match="no space left on the device"):
        _patch(1).save(tmp_path / "p.safetensors")
    with pytest.raises(ErasekitError, match="no space left"):
        _patch(1).save(tmp_path / "new.safetensors")
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]


def test_cli_on_a_full_disk_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    a, b = _patch(0, "circle").save(tmp_path / "a.safetensors"), _patch(1, "square").save(tmp_path / "b.safetensors")
    out = tmp_path / "out" / "ab.safetensors"
    monkeypatch.setattr(files, "open", _DiskFull, raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["patch", "stack", str(a), str(b), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "no space left" in err
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_atomic_directory_removes_a_failed_one(tmp_path):
    target = tmp_path / "exported"
    with pytest.raises(RuntimeError), files.atomic_directory(target) as tmp:
        (tmp / "model_index.json").write_text("{}")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with files.atomic_directory(target) as tmp:
        (tmp / "model_index.json").write_text("{}")
    assert (target / "model_index.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]


def test_an_unreadable_cache_entry_is_dropped_and_recomputed(tmp_path):
    cache = ImageCache(tmp_path)
    images = torch.rand(2, 3, 8, 8)
    cache.put("k", images)
    assert torch.equal(cache.get("k"), images)
    (tmp_path / "k.safetensors").write_bytes(b"\x00garbage, not a safetensors file")
    assert cache.get("k") is None
    assert not (tmp_path / "k.safetensors").exists()
    cache.put("k", images)
    assert torch.equal(cache.get("k"), images)


def test_two_processes_sharing_one_cache_directory(tmp_path):
    # Both write the same entries at once, as two evaluations sharing .cache do; with one fixed temporary
    # name per entry, a process renamed the other's half-written file into place (or found it gone).
    script = textwrap.dedent(f"""
        import sys, torch
        from erasekit.core import files
        fill = float(sys.argv[1])
        for round in range(15):
            for key in range(6):
                files.write_safetensors({str(tmp_path)!r} + f"/{{key}}.safetensors",
                                        {{"images": torch.full((256, 256), fill)}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(v)], stderr=subprocess.PIPE) for v in (1.0, 2.0)]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    entries = sorted(tmp_path.iterdir())
    assert [p.name for p in entries] == [f"{k}.safetensors" for k in range(6)]
    for entry in entries:
        images = load_file(str(entry))["images"]
        assert images.shape == (256, 256) and images.unique().numel() == 1 and images[0, 0].item() in (1.0, 2.0)
