"""The recovery attacks on UNets (tiny SD, SDXL) and on an MMDiT (tiny SD3); Flux refuses them."""

import pytest
import torch

from erasekit.core import patch as patching
from erasekit.core.data import SamplingSettings
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import named_parameters, select
from erasekit.eval.attacks import InversionAttack, concept_inversion


@pytest.fixture(params=["sd", "sdxl", "sd3"])
def attacked_model(request, tokenizer_dir):
    if request.param == "sdxl":
        from conftest import build_tiny_sdxl_pipeline

        from erasekit.core.model import DiffusionModel

        return DiffusionModel(build_tiny_sdxl_pipeline(tokenizer_dir))
    return request.getfixturevalue({"sd": "tiny_model", "sd3": "tiny_sd3_model"}[request.param])


def test_concept_inversion_learns_a_row_and_leaves_the_model_as_it_was(attacked_model):
    tiny_model = attacked_model
    params = select(tiny_model.named_modules(), "xattn-kv", scopes=tiny_model.family.scopes).params
    base = {n: p.detach().clone() for n, p in params.items()}
    patch = patching.Patch.from_weights(base, {n: b * 0.5 for n, b in base.items()}, "test", {}, ["circle"],
                                        family=tiny_model.family.name)
    before = {n: p.detach().clone() for n, p in named_parameters(tiny_model.named_modules()).items()}
    settings = SamplingSettings(seeds=[0, 1], steps=2, guidance=3.0)

    patching.apply(tiny_model, patch)
    plain = generate_images(tiny_model, ["a red z", "a red z", "a blue z", "a blue z"], [0, 1, 0, 1], steps=2,
                            guidance=3.0, progress=False)
    patching.remove(tiny_model, patch)

    attacked = concept_inversion(tiny_model, [patch], "circle", ["a red circle", "a blue circle"], settings,
                                 InversionAttack(steps=5, lr=0.5, batch_size=2))
    assert attacked.shape == plain.shape
    assert (attacked - plain).abs().max() > 1e-3  # the learned placeholder row changed what is drawn
    after = {n: p.detach() for n, p in named_parameters(tiny_model.named_modules()).items()}
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert patching.applied(tiny_model) == []


def test_nearest_tokens_projects_to_real_vocabulary():
    from erasekit.eval.attacks import nearest_tokens

    table = torch.eye(4)
    rows = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.2, 1.0]])
    assert nearest_tokens(table, rows, exclude=set()) == [0, 3]
    assert nearest_tokens(table, rows, exclude={0, 3}) == [1, 2]


def test_prompt_attack_returns_real_words_and_restores_the_model(attacked_model):
    from erasekit.eval.attacks import prompt_attack, recover

    tiny_model = attacked_model
    params = select(tiny_model.named_modules(), "xattn-kv", scopes=tiny_model.family.scopes).params
    base = {n: p.detach().clone() for n, p in params.items()}
    patch = patching.Patch.from_weights(base, {n: b * 0.5 for n, b in base.items()}, "test", {}, ["circle"],
                                        family=tiny_model.family.name)
    before = {n: p.detach().clone() for n, p in named_parameters(tiny_model.named_modules()).items()}
    images, text, _ = recover(tiny_model, [patch], "circle", ["a red circle"], SamplingSettings(seeds=[0], steps=2),
                           prompt_attack(steps=3))
    assert images.shape[0] == 1 and text and "circle" not in text.split()
    ids = tiny_model.tokenizer(text, add_special_tokens=False).input_ids
    assert tiny_model.tokenizer.unk_token_id not in ids
    after = {n: p.detach() for n, p in named_parameters(tiny_model.named_modules()).items()}
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_the_recovery_attacks_refuse_flux_in_one_line(tokenizer_dir):
    """They learn a token-embedding row of the first tokenizer, which Flux's T5 sequence does not read."""
    from conftest import build_tiny_flux_pipeline

    from erasekit.core.model import DiffusionModel
    from erasekit.errors import ErasekitError
    from erasekit.eval.attacks import prompt_attack, recover

    model = DiffusionModel(build_tiny_flux_pipeline(tokenizer_dir))
    for attack in (InversionAttack(steps=2), prompt_attack(steps=2)):
        with pytest.raises(ErasekitError) as refused:
            recover(model, [], "circle", ["a red circle"], SamplingSettings(seeds=[0], steps=2), attack)
        assert "flux" in str(refused.value) and "\n" not in str(refused.value)


def test_a_budget_curve_still_rising_is_told_apart_from_one_that_stopped():
    from erasekit.eval.evaluate import _rate, still_rising

    def curve(*hits, n=32):
        import numpy as np

        return [{"budget": 100 * 3 ** i, **_rate(np.arange(n) < h)} for i, h in enumerate(hits)]

    assert still_rising(curve(3, 30))  # 0.09 → 0.94: far above the first interval
    assert not still_rising(curve(20, 22))  # within noise of the budget before
    assert not still_rising(curve(30, 10))  # falling
    assert not still_rising(curve(5))  # one budget says nothing
