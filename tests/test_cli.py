import json
import subprocess
import sys

import pytest

from erasekit.cli.main import cli, main

COMMANDS = [
    [], ["ls"], ["ls", "methods"], ["ls", "config"], ["ls", "families"], ["ls", "scopes"], ["ls", "suites"],
    ["ls", "detectors"], ["generate"],
    ["erase"], ["demo"],
    ["patch"], ["patch", "info"], ["patch", "apply"], ["patch", "remove"], ["patch", "stack"], ["patch", "export"],
    ["toyworld"], ["toyworld", "train"], ["purify"], ["eval"], ["report"],
]


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command, capsys):
    code, out, _ = _run([*command, "--help"], capsys)
    assert code == 0
    assert "Usage:" in out and len(out.splitlines()) > 3


def test_ls_detectors_names_every_registered_detector(capsys):
    from erasekit.eval import detectors
    from erasekit.eval.detector_names import DETECTORS

    code, out, _ = _run(["ls", "detectors"], capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[: len(DETECTORS)]] == list(DETECTORS)
    for class_name, summary in DETECTORS.values():  # the listing says what the class's docstring says
        assert (getattr(detectors, class_name).__doc__ or "").strip().splitlines()[0] == summary


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and "0.1.0" in out


def test_unknown_method_exit_2_with_suggestion(capsys):
    from erasekit.registry import _METHODS, _load_builtin_methods, register_method

    _load_builtin_methods()
    register_method("abo-test", "erasekit.methods.abo", "AboConfig", "test only")
    try:
        code, _, err = _run(["erase", "--method", "abo-tset", "--concept", "circle", "--out", "p.safetensors"], capsys)
    finally:
        _METHODS.pop("abo-test")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "did you mean 'abo-test'" in err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["generate", "--out", "x"], "--prompt"),
        (["generate", "--prompt", "a", "--seed", "3-1", "--out", "x"], "bad seed spec"),
        (["generate", "--model", "weights.ckpt", "--prompt", "a", "--out", "x"], "pickle"),
        (["generate", "--prompt", "a", "--steps", "0", "--out", "x"], "steps"),
        (["patch", "info", "missing.safetensors"], "does not exist"),
        (["erase", "--concept", "", "--method", "x", "--out", "p.safetensors"], "must not be empty"),
        (["erase", "--method", "sepme", "--concept", "circle", "--concept", "circle", "--out", "d"], "named twice"),
        (["erase", "--method", "sepme", "--concept", "circle", "--out", "p.safetensors"], "must be a directory"),
        (["nonsense"], "No such command"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(args, capsys)
    assert code == 2
    assert fragment in err
    assert err.startswith("erasekit: error:") and err.strip().count("\n") == 0
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_generate_and_patch_commands_end_to_end(tiny_model, tiny_dir, tmp_path, capsys):
    import torch

    from erasekit.core.patch import Patch
    from erasekit.core.scopes import select

    params = select(tiny_model.named_modules(), "to_out").params
    base = {n: p.detach().clone() for n, p in params.items()}
    edited = {n: b + 0.1 * torch.randn_like(b) for n, b in base.items()}
    patch_file = Patch.from_weights(base, edited, "test", {}, ["circle"]).save(tmp_path / "p.safetensors")

    code, _, _ = _run(["generate", "--model", str(tiny_dir), "--patch", str(patch_file), "--prompt", "a red circle",
                       "--prompt", "a blue box", "--seed", "0-2", "--steps", "2", "--out", str(tmp_path / "gen")],
                      capsys)
    assert code in (0, None)
    listing = json.loads((tmp_path / "gen" / "images.json").read_text())
    assert len(listing["images"]) == 6 and (tmp_path / "gen" / "grid.png").exists()

    _run(["patch", "apply", "--model", str(tiny_dir), "--patch", str(patch_file), "--out", str(tmp_path / "applied")],
         capsys)
    _run(["patch", "remove", "--model", str(tmp_path / "applied"), "--patch", str(patch_file),
          "--out", str(tmp_path / "restored")], capsys)
    from safetensors.torch import load_file

    original = load_file(str(tiny_dir / "unet" / "diffusion_pytorch_model.safetensors"))
    restored = load_file(str(tmp_path / "restored" / "unet" / "diffusion_pytorch_model.safetensors"))
    applied = load_file(str(tmp_path / "applied" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert any(not torch.equal(original[k], applied[k]) for k in original)

    _run(["patch", "info", str(patch_file)], capsys)


def test_console_script_runs_as_a_process():
    result = subprocess.run([sys.executable, "-m", "erasekit.cli.main", "ls", "scopes"], capture_output=True, text=True)
    assert result.returncode == 0 and "xattn-kv" in result.stdout


def test_cli_object_is_click_group():
    assert "patch" in cli.commands


def test_purify_writes_before_and_after(tiny_dir, tmp_path, capsys):
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (20, 20), (200, 30 * i, 10)).save(tmp_path / f"in{i}.png")
    code, out, _ = _run(["purify", str(tmp_path / "in0.png"), str(tmp_path / "in1.png"), "--model", str(tiny_dir),
                         "--steps", "3", "--out", str(tmp_path / "pure")], capsys)
    assert code == 0, out
    grid = Image.open(tmp_path / "pure" / "before_after.png")
    assert grid.size[1] > 2 * 16  # two rows of 16 px images
    assert len(list((tmp_path / "pure" / "images").glob("*.png"))) == 2


def test_erase_refuses_unknown_characters_before_loading(tiny_dir, capsys, monkeypatch):
    import erasekit.api

    def must_not_load(*a, **k):
        raise AssertionError("model loaded before the request was checked")

    monkeypatch.setattr(erasekit.api, "load_model", must_not_load)
    code, _, err = _run(["erase", "--model", str(tiny_dir), "--method", "abo", "--concept", "circle€",
                         "--anchor", "box",
                         "--out", "p.safetensors"], capsys)
    assert code == 2 and "tokenizer does not know" in err
    code, _, err = _run(["erase", "--model", str(tiny_dir), "--method", "abo", "--concept", "circle",
                         "--set", "preset=nudty", "--out", "p.safetensors"], capsys)
    assert code == 2 and "did you mean 'nudity'" in err


def test_a_joint_erase_says_how_many_steps_its_concepts_share(tiny_dir, capsys, monkeypatch):
    import erasekit.api
    from erasekit.defaults import resolve

    monkeypatch.setattr(erasekit.api, "load_model", lambda *a, **k: sys.exit(3))
    code, _, err = _run(["erase", "--model", str(tiny_dir), "--method", "esd", "--concept", "circle", "--concept",
                         "cross", "--out", "p.safetensors"], capsys)
    steps = resolve("esd", None, ["circle", "cross"]).config.steps
    assert code == 3 and f"2 concepts share the training steps: {steps} steps" in err
    code, _, err = _run(["erase", "--model", str(tiny_dir), "--method", "esd", "--concept", "circle", "--concept",
                         "cross", "--set", "steps=5", "--out", "p.safetensors"], capsys)
    assert code == 3 and "share the training steps" not in err


INSTANT = [
    ["ls", "methods"], ["ls", "config", "abo", "--model", "toyworld"], ["ls", "scopes"], ["ls", "suites"],
    ["ls", "families"], ["ls", "detectors"],
    ["erase", "--method", "abo", "--concept", "", "--out", "p.safetensors"],
    ["erase", "--method", "abo", "--concept", "circle", "--anchor", "square", "--set", "lr=inf",
     "--out", "p.safetensors"],
    ["erase", "--method", "abo-x", "--concept", "circle", "--out", "p.safetensors"],
    ["erase", "--method", "ca", "--concept", "circle", "--out", "p.safetensors"],
]


@pytest.mark.parametrize("args", INSTANT, ids=lambda a: " ".join(a[:3]))
def test_listing_and_validation_answer_without_torch_diffusers_or_transformers(args):
    code = ("import sys\nfrom erasekit.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
            "    print('HEAVY', heavy, 'CODE', e.code, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert "HEAVY [] CODE" in done.stderr, done.stderr[-500:]
    assert done.stderr.rstrip().endswith("CODE 0") == (args[0] == "ls")


@pytest.mark.parametrize(("device", "fragment"), [("tpu9", "is not a device"), ("cuda:x", "is not a device")])
def test_an_unknown_device_is_one_line_before_loading(device, fragment, capsys, tmp_path):
    code, _, err = _run(["generate", "--model", "toyworld", "--prompt", "a red circle", "--device", device,
                         "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_an_absent_device_is_refused_before_the_model_loads(monkeypatch):
    import torch

    from erasekit import api
    from erasekit.errors import ErasekitError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ErasekitError, match="'cuda:1' is not available on this machine"):
        api.load_model("does-not-matter", device="cuda:1")
    assert api.available_device("cpu") == "cpu"
