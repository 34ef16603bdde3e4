import torch

from erasekit.core.attention import control_attention, token_indices


def _eps(model, prompts, x, t=400):
    return model.eps(x, torch.tensor(t), model.encode(prompts))


def test_controlled_processor_matches_default(tiny_model):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = _eps(tiny_model, ["a red circle on snow"], x)
        with control_attention(tiny_model.denoiser) as store:
            controlled = _eps(tiny_model, ["a red circle on snow"], x)
    torch.testing.assert_close(controlled, reference, atol=1e-5, rtol=1e-4)
    assert store.maps  # something was recorded
    # The processors are restored afterwards.
    processors = tiny_model.denoiser.attn_processors.values()
    assert not any(type(p).__name__ == "ControlledCrossAttnProcessor" for p in processors)


def test_recorded_maps_are_distributions_over_tokens(tiny_model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), control_attention(tiny_model.denoiser) as store:
        _eps(tiny_model, ["a red circle"], x)
    for calls in store.maps.values():
        probs = calls[0]  # (B, heads, Q, L)
        torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    mass = store.token_mass()
    assert mass.shape == (1, tiny_model.tokenizer.model_max_length)
    maps = store.token_maps(size=8)
    assert maps.shape == (1, tiny_model.tokenizer.model_max_length, 8, 8)


def test_rescaling_a_token_changes_the_output_and_zero_mass(tiny_model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    idx = token_indices(tiny_model.tokenizer, "a red circle", "circle")
    assert idx == [3]
    scale = torch.ones(tiny_model.tokenizer.model_max_length)
    scale[idx] = 0.0
    with torch.no_grad(), control_attention(tiny_model.denoiser) as store:
        plain = _eps(tiny_model, ["a red circle"], x)
        store.reset()
        store.token_scale = scale
        suppressed = _eps(tiny_model, ["a red circle"], x)
    assert store.token_mass()[0, 3] == 0
    assert (plain - suppressed).abs().max() > 1e-4


def test_keep_grad_lets_attention_be_a_loss(tiny_model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    weight = next(p for n, p in tiny_model.denoiser.named_parameters() if "attn2.to_k.weight" in n)
    weight.requires_grad_(True)
    with control_attention(tiny_model.denoiser, keep_grad=True) as store:
        _eps(tiny_model, ["a red circle"], x)
        store.token_mass()[0, 3].backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
