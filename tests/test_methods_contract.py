"""Every registered method on a tiny SD-2-style v-prediction pipeline, a tiny SDXL pipeline and a tiny
SD3 (MMDiT, flow matching) pipeline: a short run changes only its scope's tensors, the caller's model is
left as it was, and apply → remove restores it exactly; what a family cannot serve is refused in one
line before training starts."""

import pytest
import torch

from erasekit.api import erase
from erasekit.core import patch as patching
from erasekit.core.model import DiffusionModel
from erasekit.core.scopes import named_parameters, select
from erasekit.registry import list_methods
from erasekit.request import EraseRequest

# (request, config, scope the patch must stay inside): a few steps each, on tiny images.
CASES = {
    "abo": (EraseRequest(["circle"], ["square"]), {"steps": 2, "sampling_steps": 3, "t_warmup": 0, "lr": 1e-3,
                                                   "pool_size": 2, "batch_size": 2}, "to_out"),
    "ca": (EraseRequest(["circle"], ["thing"]), {"steps": 2, "lr": 1e-2, "n_images": 2, "image_steps": 2,
                                                 "batch_size": 2, "variant": "noise"}, "xattn-kv"),
    "esd": (EraseRequest(["circle"]), {"steps": 2, "sampling_steps": 3, "lr": 1e-3}, "xattn"),
    "sdd": (EraseRequest(["circle"]), {"steps": 2, "sampling_steps": 3, "lr": 1e-3}, "xattn"),
    "uce": (EraseRequest(["circle"], ["square"]), {}, "xattn-kv"),
    "fmn": (EraseRequest(["circle"]), {"steps": 2, "lr": 1e-2, "scope": "xattn", "n_images": 2, "image_steps": 2},
            "xattn"),
    "sepme": (EraseRequest(["circle", "cross"]), {"max_steps": 2, "warmup": 0, "lr": 1.0, "beta": 1e-2,
                                                  "n_images": 2, "image_steps": 2}, "xattn-kv"),
}
_ABO = CASES["abo"][1]
# The variants a family must also serve: AbO's δ forms, CA's model-based and embedding forms (the
# embedding scope spans every text encoder: SDXL's two tables), ESD-u, base-sampled ESD and SDD.
VARIANTS = {
    "abo-implicit": ("abo", EraseRequest(["circle"]), {**_ABO, "delta": "implicit"}, "to_out"),
    "abo-explicit": ("abo", EraseRequest(["circle"], ["square"]),
                     {**_ABO, "delta": "explicit",
                      "instructions": [{"text": "red", "guidance": -1.0, "t_high": 0, "t_low": 3}]}, "to_out"),
    "ca-model": ("ca", EraseRequest(["circle"], ["thing"]), {**CASES["ca"][1], "variant": "model"}, "xattn-kv"),
    "ca-embedding": ("ca", EraseRequest(["circle"], ["thing"]), {**CASES["ca"][1], "scope": "embedding"},
                     "embedding"),
    "esd-u": ("esd", EraseRequest(["circle"]), {**CASES["esd"][1], "variant": "u"}, "non-xattn"),
    # ESD and SDD with x_t from the frozen base, pooled: two concepts over a batch of two
    "esd-base": ("esd", EraseRequest(["circle", "cross"]),
                 {**CASES["esd"][1], "sample_from": "base", "pool_size": 2, "batch_size": 2}, "xattn"),
    "sdd-base": ("sdd", EraseRequest(["circle", "cross"]),
                 {**CASES["sdd"][1], "sample_from": "base", "pool_size": 2, "batch_size": 2}, "xattn"),
}
ALL = {**{m: (m, *case) for m, case in CASES.items()}, **VARIANTS}


@pytest.fixture(scope="module")
def v_model(tokenizer_dir):
    from conftest import build_tiny_pipeline
    from diffusers import DDIMScheduler

    pipe = build_tiny_pipeline(tokenizer_dir, text_dim=128)  # sepme's null spaces need the room
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    return DiffusionModel(pipe)


@pytest.fixture(scope="module")
def sdxl_model(tokenizer_dir):
    from conftest import build_tiny_sdxl_pipeline

    return DiffusionModel(build_tiny_sdxl_pipeline(tokenizer_dir, text_dim=64))  # context 64 + 80, as above


@pytest.fixture(scope="module")
def sd3_model(tokenizer_dir):
    from conftest import build_tiny_sd3_pipeline

    return DiffusionModel(build_tiny_sd3_pipeline(tokenizer_dir, text_dim=64))  # context 128: sepme's room


@pytest.fixture(scope="module")
def flux_model(tokenizer_dir):
    from conftest import build_tiny_flux_pipeline

    model = DiffusionModel(build_tiny_flux_pipeline(tokenizer_dir))
    model.encode_options = {"max_sequence_length": 16}
    return model


@pytest.fixture(params=["sd-v", "sdxl", "sd3", "flux"])
def family_model(request, v_model, sdxl_model, sd3_model, flux_model):
    return {"sd-v": v_model, "sdxl": sdxl_model, "sd3": sd3_model, "flux": flux_model}[request.param]


# What a family refuses (one line, before training), case by case: Flux's sequence is T5's, so there
# are no first-tokenizer embedding rows for ca's embedding scope.
REFUSED = {"flux": {"ca-embedding"}}
# Where a family puts a case's edit, when not in the case's scope: UCE and SepME edit the layers that
# read the conditioning (SD3, Flux: context_embedder and the pooled text_embedder).
SCOPE_ON = {(family, method): "text-proj" for family in ("sd3", "flux") for method in ("uce", "sepme")}


def test_every_registered_method_has_a_contract_case():
    assert {spec.name for spec in list_methods()} == set(CASES)


@pytest.mark.parametrize("case", sorted(ALL))
def test_short_run_stays_in_scope_and_comes_off_exactly(family_model, case):
    v_model = family_model
    method, request, config, scope = ALL[case]
    if case in REFUSED.get(v_model.family.name, ()):
        from erasekit.errors import ErasekitError

        with pytest.raises(ErasekitError) as refused:
            erase(v_model, method, request, config, progress=False)
        assert v_model.family.name in str(refused.value) and "\n" not in str(refused.value)
        return
    scope = SCOPE_ON.get((v_model.family.name, case), scope)
    if "scope" not in config:  # the family's layer of defaults may choose the scope (abo on an MMDiT)
        scope = v_model.family.method_defaults.get(method, {}).get("scope", scope)
    before = {n: p.detach().clone() for n, p in named_parameters(v_model.named_modules()).items()}
    result = erase(v_model, method, request, config, progress=False)
    patches = result if isinstance(result, list) else [result]
    chosen = select(v_model.named_modules(), scope, token_ids=[0], scopes=v_model.family.scopes)
    allowed = set(chosen.params)
    for hook in chosen.hooks:
        hook.remove()
    assert all(set(p.deltas) <= allowed for p in patches)
    assert any(float(d.abs().max()) > 0 for p in patches for d in p.deltas.values())
    assert all(torch.equal(before[n], p.detach()) for n, p in named_parameters(v_model.named_modules()).items())
    with patching.applied_temporarily(v_model, patches):
        assert any(not torch.equal(before[n], p.detach())
                   for n, p in named_parameters(v_model.named_modules()).items())
    assert all(torch.equal(before[n], p.detach()) for n, p in named_parameters(v_model.named_modules()).items())
    assert all(p.family == v_model.family.name for p in patches)


def test_purification_runs_on_every_family(family_model):
    from erasekit import api

    images = torch.rand(2, 3, family_model.image_size, family_model.image_size,
                        generator=torch.Generator().manual_seed(0))
    out = api.purify(family_model, images, prompt="a red circle", steps=3)
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert float((out - images).abs().mean()) > 1e-3


MANY = ["circle", "square", "triangle", "cross", "diamond", "red", "green", "blue"]  # 8 toy concepts


@pytest.mark.parametrize("method", ["abo", "ca", "esd", "uce"])
def test_eight_concepts_in_one_run_make_one_patch_naming_all(v_model, method):
    _, config, scope = CASES[method]
    anchors = ["thing"] * len(MANY) if method in ("abo", "ca", "uce") else []
    patch = erase(v_model, method, EraseRequest(MANY, anchors), config, progress=False)
    assert patch.concepts == MANY and patch.deltas
    allowed = set(select(v_model.named_modules(), scope).params)
    assert set(patch.deltas) <= allowed
