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
    return _random_edit(params, scale, seed, config={"scope": scope})


def _random_edit(params, scale, seed, family="sd", config=None):
    """A patch adding scaled Gaussian noise to each of `params` (name → parameter)."""
    gen = torch.Generator().manual_seed(seed)
    base = {n: p.detach().clone() for n, p in params.items()}
    edited = {n: b + scale * torch.randn(b.shape, generator=gen) for n, b in base.items()}
    return patching.Patch.from_weights(base, edited, "test", config or {}, ["circle"], family=family)


def _plain_diffusers_images(pipeline_dir, lora_dir, prompts, steps, out_file, guidance=7.5, load=None, call=None):
    """Images plain diffusers draws with the LoRA loaded, in a process that never imports erasekit
    (`load`: from_pretrained arguments, `call`: extra pipeline-call arguments)."""
    load = {"safety_checker": None} if load is None else load
    script = textwrap.dedent(f"""
        import sys, torch
        from diffusers import DiffusionPipeline
        from safetensors.torch import save_file
        pipe = DiffusionPipeline.from_pretrained({str(pipeline_dir)!r}, **{load!r})
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights({str(lora_dir)!r})
        images = pipe({list(prompts)!r}, num_inference_steps={steps}, guidance_scale={guidance}, output_type="pt",
                      generator=[torch.Generator().manual_seed(s) for s in range({len(prompts)})],
                      **{call or {}!r}).images
        assert not any(name.startswith("erasekit") for name in sys.modules)
        save_file({{"images": images.float().contiguous()}}, {str(out_file)!r})
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


# family -> (builder in conftest, from_pretrained arguments, pipeline-call arguments, guidance, erasekit
# encode options and sample size that match those arguments, the text encoder the LoRA also edits)
FAMILIES = {
    "sdxl": ("build_tiny_sdxl_pipeline", {}, {}, 5.0, None, None, "text_encoder_2"),
    "sd3": ("build_tiny_sd3_pipeline", {"text_encoder_3": None, "tokenizer_3": None}, {"height": 32, "width": 32},
            5.0, None, None, "text_encoder_2"),
    "flux": ("build_tiny_flux_pipeline", {}, {"height": 32, "width": 32, "max_sequence_length": 16}, 3.5,
             {"max_sequence_length": 16}, 8, "text_encoder"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_s_lora_loads_in_plain_diffusers_and_draws_the_patched_images(family, tokenizer_dir, tmp_path):
    """The round trip on SDXL, SD3 and Flux: the cross-attention scope of the denoiser and one linear of a
    text encoder, exported at full rank, drawn by the family's own pipeline after load_lora_weights()."""
    import conftest

    from erasekit.core.model import DiffusionModel

    builder, load, call, guidance, encode, sample_size, encoder = FAMILIES[family]
    getattr(conftest, builder)(tokenizer_dir).save_pretrained(tmp_path / "pipe", safe_serialization=True)
    model = DiffusionModel.load(tmp_path / "pipe", device="cpu")
    assert model.family.name == family
    if encode:
        model.encode_options = encode
    if sample_size:
        model.pipe.default_sample_size = sample_size
    every = dict(named_parameters(model.named_modules()))
    text_linear = next(n for n in every if n.startswith(f"{encoder}.") and n.endswith("0.self_attn.q_proj.weight"))
    params = select(model.named_modules(), "xattn", scopes=model.family.scopes).params
    params[text_linear] = every[text_linear]
    edit = _random_edit(params, 0.2, 1, family=family)
    out = export_lora(model, edit, tmp_path / "lora", RankChoice())
    keys = set(load_file(str(out / LORA_FILE)))
    assert {k.split(".")[0] for k in keys} == {model.family.denoiser, encoder}
    with patching.applied_temporarily(model, [edit]):
        ours = generate_images(model, PROMPTS, [0, 1], steps=3, guidance=guidance, progress=False)
    theirs = _plain_diffusers_images(tmp_path / "pipe", out, PROMPTS, 3, tmp_path / "theirs.safetensors",
                                     guidance=guidance, load=load, call=call)
    torch.testing.assert_close(theirs, ours, atol=5e-4, rtol=0)
    base_images = generate_images(model, PROMPTS[:1], [0], steps=3, guidance=guidance, progress=False)
    assert (base_images[0] - ours[0]).abs().max() > 1e-3


def test_a_component_the_pipeline_loads_no_lora_into_is_refused_in_one_line(tokenizer_dir, tmp_path):
    import conftest

    from erasekit.core.model import DiffusionModel

    model = DiffusionModel(conftest.build_tiny_flux_pipeline(tokenizer_dir))
    name = next(n for n in named_parameters(model.named_modules()) if n.startswith("text_encoder_2.")
                and n.endswith("q.weight"))
    base = {name: dict(named_parameters(model.named_modules()))[name].detach().clone()}
    edit = patching.Patch.from_weights(base, {name: base[name] + 0.1}, "test", {}, ["circle"], family="flux")
    with pytest.raises(ErasekitError, match="loads transformer, text_encoder, not text_encoder_2") as exc:
        export_lora(model, edit, tmp_path / "lora", RankChoice())
    assert "\n" not in str(exc.value) and not (tmp_path / "lora").exists()


def test_sdxl_kohya_file_carries_both_text_encoders_and_an_mmdit_is_refused(tokenizer_dir, tmp_path):
    import conftest
    from diffusers import StableDiffusionXLPipeline

    from erasekit.core.model import DiffusionModel

    conftest.build_tiny_sdxl_pipeline(tokenizer_dir).save_pretrained(tmp_path / "pipe", safe_serialization=True)
    model = DiffusionModel.load(tmp_path / "pipe", device="cpu")
    every = dict(named_parameters(model.named_modules()))
    # out_proj too: diffusers tells an old-style text-encoder state dict by its to_out keys
    names = [n for n in every if n.endswith(("0.self_attn.q_proj.weight", "0.self_attn.out_proj.weight"))]
    names += list(select(model.named_modules(), "xattn-kv", scopes=model.family.scopes).params)
    base = {n: every[n].detach().clone() for n in names}
    edit = _random_edit({n: every[n] for n in names}, 0.1, 2, family="sdxl")
    out = export_lora(model, edit, tmp_path / "kohya", RankChoice(), kohya=True)
    assert {k.split("_")[1] for k in load_file(str(out / LORA_FILE))} == {"unet", "te1", "te2"}
    pipe = StableDiffusionXLPipeline.from_pretrained(tmp_path / "pipe")
    pipe.load_lora_weights(out)
    pipe.fuse_lora()
    for key, delta in edit.deltas.items():
        component, _, name = key.partition(".")
        fused = dict(getattr(pipe, component).named_parameters())
        weight = fused.get(name, fused.get(name.replace(".weight", ".base_layer.weight")))
        torch.testing.assert_close(weight.detach(), base[key] + delta, atol=1e-5, rtol=0)

    sd3 = DiffusionModel(conftest.build_tiny_sd3_pipeline(tokenizer_dir))
    params = {n: p for n, p in select(sd3.named_modules(), "xattn-kv", scopes=sd3.family.scopes).params.items()
              if n.endswith(".weight")}
    edit = _random_edit(params, 0.1, 3, family="sd3")
    with pytest.raises(ErasekitError, match="kohya layout has no names for transformer modules") as exc:
        export_lora(sd3, edit, tmp_path / "k3", RankChoice(), kohya=True)
    assert "\n" not in str(exc.value) and not (tmp_path / "k3").exists()
