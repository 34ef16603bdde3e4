"""Text-attention control on a UNet's cross-attention and on an MMDiT's joint attention (tiny SD3)."""

import pytest
import torch

from erasekit.core.attention import control_attention, token_indices


@pytest.fixture(params=["sd", "sd3", "flux"])
def attn_model(request, tokenizer_dir):
    if request.param == "flux":
        from conftest import build_tiny_flux_pipeline

        from erasekit.core.model import DiffusionModel

        model = DiffusionModel(build_tiny_flux_pipeline(tokenizer_dir))
        model.encode_options = {"max_sequence_length": 16}
        return model
    return request.getfixturevalue({"sd": "tiny_model", "sd3": "tiny_sd3_model"}[request.param])


def _eps(model, prompts, x, t=400):
    return model.eps(x, torch.tensor(t), model.encode(prompts))


def _text_length(model) -> int:
    return model.encode([""]).hidden.shape[1]


def test_controlled_processor_matches_default(attn_model):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = _eps(attn_model, ["a red circle on snow"], x)
        with control_attention(attn_model.denoiser) as store:
            controlled = _eps(attn_model, ["a red circle on snow"], x)
    torch.testing.assert_close(controlled, reference, atol=1e-5, rtol=1e-4)
    assert store.maps  # something was recorded
    # The processors are restored afterwards.
    processors = attn_model.denoiser.attn_processors.values()
    assert not any(type(p).__name__.startswith("Controlled") for p in processors)


def test_recorded_maps_are_distributions_over_tokens(attn_model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), control_attention(attn_model.denoiser) as store:
        _eps(attn_model, ["a red circle"], x)
    for calls in store.maps.values():
        probs = calls[0]  # (B, heads, Q, L)
        total = probs.sum(-1)
        if attn_model.family.name != "sd":  # joint attention: the share of each image query's mass on text
            assert float(total.min()) > 0 and float(total.max()) < 1
        else:
            torch.testing.assert_close(total, torch.ones_like(total))
    mass = store.token_mass()
    assert mass.shape == (1, _text_length(attn_model))
    maps = store.token_maps(size=8)
    assert maps.shape == (1, _text_length(attn_model), 8, 8)


def test_rescaling_a_token_changes_the_output_and_zero_mass(attn_model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    idx = token_indices(attn_model.tokenizer, "a red circle", "circle")
    assert idx == [3]
    scale = torch.ones(_text_length(attn_model))
    scale[idx] = 0.0
    with torch.no_grad(), control_attention(attn_model.denoiser) as store:
        plain = _eps(attn_model, ["a red circle"], x)
        store.reset()
        store.token_scale = scale
        suppressed = _eps(attn_model, ["a red circle"], x)
    assert store.token_mass()[0, 3] == 0
    assert (plain - suppressed).abs().max() > 1e-4


def test_keep_grad_lets_attention_be_a_loss(attn_model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    weight = next(p for n, p in attn_model.denoiser.named_parameters()
                  if "attn2.to_k.weight" in n or "attn.add_k_proj.weight" in n)  # Flux: its joint block's
    weight.requires_grad_(True)
    with control_attention(attn_model.denoiser, keep_grad=True) as store:
        _eps(attn_model, ["a red circle"], x)
        store.token_mass()[0, 3].backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_sd35_second_self_attention_is_not_taken_for_text_attention():
    """SD3.5's blocks may carry an `attn2` that is self-attention over the image tokens: only the joint
    `attn` layers get controlled processors, whatever the names say."""
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                        caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=8,
                                        dual_attention_layers=(0,))
    assert any(".attn2." in name for name in transformer.attn_processors)
    with control_attention(transformer):
        kinds = {name: type(p).__name__ for name, p in transformer.attn_processors.items()}
    assert all(kind == "ControlledJointAttnProcessor" for name, kind in kinds.items() if ".attn." in name)
    assert not any(kind.startswith("Controlled") for name, kind in kinds.items() if ".attn2." in name)
