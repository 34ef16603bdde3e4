"""LoRA export: plain diffusers' load_lora_weights() draws what erasekit's patched model draws."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from erasekit.core import patch as patching
from erasekit.core.lora import LORA_FILE, REPORT_FILE, RankChoice, export_lora
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import named_parameters, select
from erasekit.errors import ErasekitError

PROMPTS = ["a red circle", "a blue box"]


def _patch(model, scope="to_out", scale=0.2, seed=0, extra=()):
    params = select(model.named_modules(), scope).params
    for name in extra:
        params[name] = dict(named_parameters(model.named_modules()))[name]
    gen = torch.Generator().manual_seed(seed)
    base = {n: p.detach().clone() for n, p in params.items()}
    edited = {n: b + scale * torch.randn(b.shape, generator=gen) for n, b in base.items()}
    return patching.Patch.from_weights(base, edited, "test", {"scope": scope}, ["circle"])


def _plain_diffusers_images(pipeline_dir, lora_dir, prompts, steps, out_file):
    """Images plain diffusers draws with the LoRA loaded, in a process that never imports erasekit."""
    script = textwrap.dedent(f"""
        import sys, torch
        from diffusers import StableDiffusionPipeline
        from safetensors.torch import save_file
        pipe = StableDiffusionPipeline.from_pretrained({str(pipeline_dir)!r}, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights({str(lora_dir)!r})
        images = pipe({list(prompts)!r}, num_inference_steps={steps}, guidance_scale=7.5, output_type="pt",
                      generator=[torch.Generator().manual_seed(s) for s in range({len(prompts)})]).images
        assert not any(name.startswith("erasekit") for name in sys.modules)
        save_file({{"images": images.contiguous()}}, {str(out_file)!r})
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return load_file(str(out_file))["images"]


def test_full_rank_lora_in_plain_diffusers_draws_the_patched_images(tiny_model, tiny_dir, tmp_path):
    # to_out (linear weights and biases) plus a conv, as an edit of every LoRA-able kind
    patch = _patch(tiny_model, extra=("unet.conv_in.weight",))
    out = export_lora(tiny_model, patch, tmp_path / "lora", RankChoice())
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["max_relative_error"] < 1e-6 and all(t["rank"] == t["full_rank"] for t in report["tensors"])
    keys = set(load_file(str(out / LORA_FILE)))
    assert "unet.conv_in.lora_A.weight" in keys and any(k.endswith("to_out.0.lora_B.bias") for k in keys)
    patching.apply(tiny_model, patch)
    ours = generate_images(tiny_model, PROMPTS, [0, 1], steps=3, progress=False)
    patching.remove(tiny_model, patch)
    base = generate_images(tiny_model, PROMPTS[:1], [0], steps=3, progress=False)
    theirs = _plain_diffusers_images(tiny_dir, out, PROMPTS, 3, tmp_path / "theirs.safetensors")
    torch.testing.assert_close(theirs, ours, atol=5e-4, rtol=0)
    assert (base[0] - ours[0]).abs().max() > 1e-3  # the edit is visible, so equality means something


def test_energy_keeps_the_smallest_rank_holding_that_share():
    s = torch.tensor([3.0, 2.0, 1.0, 0.1])  # squared shares 9, 4, 1, 0.01 of 14.01
    assert RankChoice(energy=0.6).of(s) == 1
    assert RankChoice(energy=0.9).of(s) == 2
    assert RankChoice(energy=0.99).of(s) == 3
    assert RankChoice(energy=1.0).of(s) == 4
    assert RankChoice(rank=2).of(s) == 2 and RankChoice(rank=9).of(s) == 4 and RankChoice().of(s) == 4


def test_a_low_rank_edit_is_found_by_energy(tiny_model, tmp_path):
    params = select(tiny_model.named_modules(), "xattn-kv").params
    gen = torch.Generator().manual_seed(1)
    base = {n: p.detach().clone() for n, p in params.items()}
    edited = {n: b + torch.randn(b.shape[0], 2, generator=gen) @ torch.randn(2, b.shape[1], generator=gen) * 0.1
              for n, b in base.items()}
    patch = patching.Patch.from_weights(base, edited, "test", {}, ["circle"])
    out = export_lora(tiny_model, patch, tmp_path / "lora", RankChoice(energy=0.99))
    report = json.loads((out / REPORT_FILE).read_text())
    assert all(t["rank"] <= 2 < t["full_rank"] for t in report["tensors"])
    assert report["max_relative_error"] < 1e-5 and report["values"] < report["patch_values"]


@pytest.mark.parametrize("bad", [dict(rank=0), dict(energy=0.0), dict(energy=1.5), dict(rank=2, energy=0.9)])
def test_bad_rank_choices_are_one_line(bad):
    with pytest.raises(ErasekitError):
        RankChoice(**bad)


def test_an_embedding_edit_is_refused_in_one_line(tiny_model, tmp_path):
    name = next(n for n in named_parameters(tiny_model.named_modules()) if "token_embedding" in n)
    base = {name: dict(named_parameters(tiny_model.named_modules()))[name].detach().clone()}
    patch = patching.Patch.from_weights(base, {name: base[name] + 0.1}, "test", {}, ["circle"])
    with pytest.raises(ErasekitError, match="Embedding, which a LoRA cannot carry") as exc:
        export_lora(tiny_model, patch, tmp_path / "lora", RankChoice())
    assert "\n" not in str(exc.value) and not (tmp_path / "lora").exists()


def test_cli_exports_a_lora_and_refuses_lora_options_elsewhere(tiny_model, tiny_dir, tmp_path, capsys):
    from erasekit.cli.main import main

    patch_file = _patch(tiny_model, scope="xattn").save(tmp_path / "p.safetensors")
    common = ["patch", "export", "--model", str(tiny_dir), "--patch", str(patch_file)]
    with pytest.raises(SystemExit) as exc:
        main([*common, "--format", "lora", "--energy", "0.99", "--out", str(tmp_path / "lora")])
    assert exc.value.code == 0 and (tmp_path / "lora" / LORA_FILE).exists()
    report = json.loads((tmp_path / "lora" / REPORT_FILE).read_text())
    assert report["rank_choice"] == {"rank": None, "energy": 0.99} and report["patch"]["id"] == patching.Patch.load(
        patch_file).id
    with pytest.raises(SystemExit) as exc:
        main([*common, "--rank", "2", "--out", str(tmp_path / "dir")])
    assert exc.value.code == 2 and "--format lora" in capsys.readouterr().err and not (tmp_path / "dir").exists()


def test_kohya_layout_loads_through_diffusers_kohya_converter(tiny_model, tiny_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    patch = _patch(tiny_model, scope="xattn-kv")  # to_k / to_v: weights only, as kohya files carry
    out = export_lora(tiny_model, patch, tmp_path / "kohya", RankChoice(), kohya=True)
    keys = set(load_file(str(out / LORA_FILE)))
    assert keys and all(k.startswith("lora_unet_") for k in keys) and any(k.endswith(".alpha") for k in keys)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(out)
    pipe.fuse_lora()
    fused = dict(pipe.unet.named_parameters())
    for key, delta in patch.deltas.items():
        name = key.removeprefix("unet.")
        weight = fused.get(name, fused.get(name.replace(".weight", ".base_layer.weight")))
        base = dict(named_parameters(tiny_model.named_modules()))[key].detach()
        torch.testing.assert_close(weight.detach(), base + delta, atol=1e-5, rtol=0)
    with pytest.raises(ErasekitError, match="kohya layout has no bias terms"):
        export_lora(tiny_model, _patch(tiny_model, scope="to_out"), tmp_path / "k2", RankChoice(), kohya=True)
    assert not (tmp_path / "k2").exists()


def test_a_toy_world_abo_patch_as_lora_draws_the_same_images_in_plain_diffusers(tmp_path):
    """The issue's round trip on the shipped toy world: a (short) All-but-One erasure of circle → square,
    exported at full rank, loaded by plain diffusers in a process that never imports erasekit."""
    from erasekit import api
    from erasekit.core.sources import toyworld_dir
    from erasekit.request import EraseRequest

    model = api.load_model("toyworld", device="cpu")
    patch = api.erase(model, "abo", EraseRequest(concepts=["circle"], anchors=["square"]),
                      {"steps": 3, "pool_size": 2, "pool_refresh": 3, "batch_size": 1}, progress=False)
    out = export_lora(model, patch, tmp_path / "lora", RankChoice())
    prompts = ["a red circle on snow", "a blue square on sand"]
    with patching.applied_temporarily(model, [patch]):
        ours = generate_images(model, prompts, [0, 1], steps=4, progress=False)
    base = generate_images(model, prompts[:1], [0], steps=4, progress=False)
    theirs = _plain_diffusers_images(toyworld_dir(), out, prompts, 4, tmp_path / "theirs.safetensors")
    torch.testing.assert_close(theirs, ours, atol=5e-4, rtol=0)
    assert (base[0] - ours[0]).abs().max() > 1e-3  # three steps already changed the image
