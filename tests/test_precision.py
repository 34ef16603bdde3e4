"""Reduced precision and gradient checkpointing: bf16 weights with float32 master copies of what
trains, the base restored in its own dtype, and checkpointing that changes memory, not results."""

import pytest
import torch

from erasekit import api
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import named_parameters
from erasekit.request import EraseRequest

ABO = {"steps": 2, "sampling_steps": 3, "t_warmup": 0, "lr": 1e-3, "pool_size": 2, "batch_size": 2}


@pytest.fixture
def bf16_model(tiny_dir):
    return api.load_model(tiny_dir, device="cpu", dtype="bf16")


def test_bf16_erase_trains_float32_copies_and_restores_the_bf16_base(bf16_model):
    before = {n: p.detach().clone() for n, p in named_parameters(bf16_model.named_modules()).items()}
    assert bf16_model.dtype == torch.bfloat16 and bf16_model.vae.dtype == torch.bfloat16
    patch = api.erase(bf16_model, "abo", EraseRequest(["circle"], ["square"]), ABO, progress=False)
    assert patch.deltas and all(d.dtype == torch.float32 for d in patch.deltas.values())
    assert any(float(d.abs().max()) > 0 for d in patch.deltas.values())
    after = named_parameters(bf16_model.named_modules())
    assert all(p.dtype == torch.bfloat16 and torch.equal(p.detach(), before[n]) for n, p in after.items())
    images = generate_images(bf16_model, ["a red circle"], [0], steps=2, progress=False)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


def test_bf16_images_stay_close_to_fp32(tiny_dir, bf16_model):
    full = api.load_model(tiny_dir, device="cpu")
    a = generate_images(full, ["a red circle"], [0], steps=2, progress=False)
    b = generate_images(bf16_model, ["a red circle"], [0], steps=2, progress=False)
    assert float((a - b).abs().mean()) < 0.05


def test_an_unknown_dtype_is_one_clear_error(tiny_dir):
    from erasekit.errors import ErasekitError

    with pytest.raises(ErasekitError, match="dtype must be one of fp32, bf16, fp16"):
        api.load_model(tiny_dir, device="cpu", dtype="int8")


def test_fp16_vae_marked_force_upcast_runs_in_float32(tiny_dir):
    model = api.load_model(tiny_dir, device="cpu", dtype="fp16")
    assert model.dtype == torch.float16
    assert model.vae.dtype == (torch.float32 if model.vae.config.force_upcast else torch.float16)


def test_gradient_checkpointing_gives_the_same_patch_and_is_switched_off_after(tiny_model):
    request = EraseRequest(["circle"], ["square"])
    plain = api.erase(tiny_model, "abo", request, {**ABO, "scope": "full"}, progress=False)
    checkpointed = api.erase(tiny_model, "abo", request, {**ABO, "scope": "full"}, progress=False,
                             gradient_checkpointing=True)
    assert plain.deltas.keys() == checkpointed.deltas.keys()
    for name in plain.deltas:
        torch.testing.assert_close(checkpointed.deltas[name], plain.deltas[name], atol=1e-6, rtol=0)
    assert not tiny_model.denoiser.is_gradient_checkpointing


def test_the_session_switch_really_recomputes_activations_in_backward(tiny_model):
    from erasekit.core.edit import EditSession

    calls = []
    block = tiny_model.denoiser.down_blocks[1].resnets[0]  # diffusers checkpoints each resnet and attention
    forward = block.forward  # counted on forward itself: torch skips module hooks when it recomputes
    block.forward = lambda *args, **kwargs: (calls.append(1), forward(*args, **kwargs))[1]
    x = torch.randn(1, *tiny_model.latent_shape)
    cond = tiny_model.encode(["a red circle"])
    counts = []
    for checkpointing in (False, True):
        calls.clear()
        with EditSession(tiny_model, "full") as session:
            if checkpointing:
                session.enable_gradient_checkpointing()
            tiny_model.eps(x, 500, cond).sum().backward()
        counts.append(len(calls))
    del block.forward
    assert counts[0] == 1 and counts[1] > 1  # the checkpointed block ran again in backward
