import pytest
import torch

from erasekit.core.scopes import named_parameters, select
from erasekit.errors import ErasekitError


@pytest.mark.parametrize(
    "scope, must, must_not",
    [
        ("to_out", ["attn1.to_out.0.weight", "attn2.to_out.0.bias"], ["to_k", "to_q", "conv"]),
        ("xattn", ["attn2.to_q.weight", "attn2.to_out.0.weight"], ["attn1.", "resnets"]),
        ("xattn-kv", ["attn2.to_k.weight", "attn2.to_v.weight"], ["to_q", "to_out", "attn1."]),
        ("non-xattn", ["resnets", "attn1.to_q.weight"], ["attn2.", "time_embedding", "conv_out"]),
        ("full", ["attn2.to_k.weight", "conv_out"], ["text_encoder."]),
        ("text-encoder", ["encoder.layers.0.self_attn.k_proj.weight", "final_layer_norm.weight"],
         ["unet.", "token_embedding", "position_embedding"]),
    ],
)
def test_scope_membership(tiny_model, scope, must, must_not):
    sel = select(tiny_model.named_modules(), scope)
    names = list(sel.params)
    for fragment in must:
        assert any(fragment in n for n in names), fragment
    for fragment in must_not:
        assert not any(fragment in n for n in names), fragment
    assert sel.trainable_count == sum(p.numel() for p in sel.params.values())
    frozen = [p for n, p in named_parameters(tiny_model.named_modules()).items() if n not in sel.params]
    assert not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in sel.params.values())


def test_embedding_scope_trains_only_given_rows(tiny_model):
    sel = select(tiny_model.named_modules(), "embedding", token_ids=[5, 7])
    (weight,) = sel.params.values()
    assert sel.trainable_count == 2 * weight.shape[1]
    out = tiny_model.text_encoder(torch.tensor([[5, 6, 7, 8]]))[0]
    # weighted: a plain sum of a layer-normed output does not depend on its input (zero gradient everywhere)
    loss = (out * torch.linspace(-1.0, 1.0, out.shape[-1])).sum()
    loss.backward()
    rows = weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert rows == [5, 7]


def test_unknown_scope_suggests(tiny_model):
    with pytest.raises(ErasekitError, match="did you mean 'xattn'"):
        select(tiny_model.named_modules(), "xatn")
