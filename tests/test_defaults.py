"""Method defaults in layers: paper < the model's own < request < --set, recorded in the patch."""

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import torch

from erasekit.defaults import model_layer, profile_of, resolve
from erasekit.methods.abo.config import AboConfig
from erasekit.request import EraseRequest

ROOT = Path(__file__).resolve().parents[1]


def test_profile_is_known_without_loading_the_model(tmp_path, tiny_dir):
    assert profile_of("toyworld") == profile_of("toyworld-wide") == "toyworld"
    assert profile_of(ROOT / "models" / "toyworld") == "toyworld"  # a path to a trained toy world
    assert profile_of(tiny_dir) is None and profile_of("owner/name") is None
    (tmp_path / "training.json").write_text("not json")
    assert profile_of(tmp_path) is None


def test_model_layer_overrides_the_paper_and_set_overrides_the_model():
    toy_lr = model_layer("toyworld", "abo", ["circle"], {})["lr"]
    assert toy_lr != AboConfig().lr
    resolved = resolve("abo", "toyworld", ["circle"])
    assert resolved.config.lr == toy_lr and resolved.sources["lr"] == "model:toyworld"
    assert resolved.sources.get("lam", "paper") == "paper"
    resolved = resolve("abo", "toyworld", ["circle"], [("request", {"lam": 1.0}), ("set", {"lr": "3e-3"})])
    assert resolved.config.lr == 3e-3 and resolved.sources["lr"] == "set"
    assert resolved.config.lam == 1.0 and resolved.sources["lam"] == "request"
    assert resolve("abo", None, ["circle"]).config.lr == AboConfig().lr  # unknown model: the paper's


def test_a_joint_erase_gets_steps_that_grow_with_its_concepts(monkeypatch):
    from erasekit import defaults
    from erasekit.registry import get_method
    from erasekit.toyworld import defaults as toy

    one = resolve("esd", None, ["circle"]).config.steps
    joint = resolve("esd", None, ["circle", "cross", "red"])
    assert joint.config.steps == round(one * 3 ** defaults.JOINT_STEPS_EXPONENT) > one
    assert joint.sources["steps"] == "joint:3 concepts"
    # the user's steps are the whole run's, whatever N
    assert resolve("esd", None, ["circle", "cross"], [("set", {"steps": "7"})]).config.steps == 7
    # a profile's own exponent (here on a toy world's per-method values) replaces the library's
    monkeypatch.setattr(toy, "joint_steps_exponent", lambda method: 0.5, raising=False)
    toy_one = resolve("abo", "toyworld", ["circle"]).config.steps
    assert resolve("abo", "toyworld", ["circle", "cross", "red", "blue"]).config.steps == toy_one * 2
    # methods whose concepts do not share the steps are left alone
    assert not get_method("uce").shared_steps and "steps" not in resolve("uce", None, ["circle", "cross"]).sources


def test_a_toy_worlds_family_values_apply_to_that_family_only(monkeypatch):
    from erasekit.toyworld import defaults as toy

    unet_lr = resolve("abo", "toyworld", ["circle"], family="sd").config.lr
    monkeypatch.setattr(toy, "FAMILY_DEFAULTS", {"sd3": {"abo": {"lr": unet_lr / 10}}})
    mmdit = resolve("abo", "toyworld", ["circle"], family="sd3")
    assert mmdit.config.lr == unet_lr / 10 and mmdit.sources["lr"] == "model:toyworld"
    assert mmdit.config.steps == resolve("abo", "toyworld", ["circle"], family="sd").config.steps  # the rest shared
    assert resolve("abo", "toyworld", ["circle"], family="sd").config.lr == unet_lr
    ca_lr = resolve("ca", "toyworld", ["circle"]).config.lr
    assert resolve("ca", "toyworld", ["circle"], family="sd3").config.lr == ca_lr  # other methods untouched


def test_a_familys_variant_values_beat_its_method_values_and_the_unet_worlds_variant(monkeypatch):
    from erasekit.toyworld import defaults as toy

    unet_u = resolve("esd", "toyworld", ["circle"], [("request", {"variant": "u"})], family="sd").config.lr
    unet_x = resolve("esd", "toyworld", ["circle"], [("request", {"variant": "x"})], family="sd").config.lr
    assert unet_u != unet_x
    monkeypatch.setattr(toy, "FAMILY_DEFAULTS", {"sd3": {"esd": {"lr": unet_x * 3}}})
    monkeypatch.setattr(toy, "FAMILY_VARIANT_DEFAULTS", {"sd3": {("esd", "variant", "u"): {"lr": unet_u / 3}}})

    def lr(variant: str, family: str) -> float:
        return resolve("esd", "toyworld", ["circle"], [("request", {"variant": variant})], family=family).config.lr

    assert lr("x", "sd3") == unet_x * 3 and lr("u", "sd3") == unet_u / 3
    assert lr("x", "sd") == unet_x and lr("u", "sd") == unet_u


def test_model_layer_depends_on_the_concept_kind_and_variant():
    ca_shape = model_layer("toyworld", "ca", ["circle"], {})["prompt_templates"]
    ca_color = model_layer("toyworld", "ca", ["red"], {})["prompt_templates"]
    assert all("{}" in t for t in ca_shape + ca_color) and set(ca_shape).isdisjoint(ca_color)
    assert any(t.replace("{}", "red").count("red") == 1 and " circle" in t for t in ca_color)
    esd_x = model_layer("toyworld", "esd", ["circle"], {"variant": "x"})["lr"]
    assert model_layer("toyworld", "esd", ["circle"], {"variant": "u"})["lr"] != esd_x


def test_concepts_of_different_kinds_at_once_get_templates_of_their_own_kind():
    from erasekit.errors import ErasekitError
    from erasekit.registry import get_method

    shape = model_layer("toyworld", "ca", ["circle"], {})["prompt_templates"]
    color = model_layer("toyworld", "ca", ["red"], {})["prompt_templates"]
    mixed = model_layer("toyworld", "ca", ["circle", "red", "square"], {})
    assert mixed["concept_templates"] == [shape, color, shape] and "prompt_templates" not in mixed
    # a user's own templates are not replaced by the model's per-concept ones
    assert "concept_templates" not in model_layer("toyworld", "ca", ["circle", "red"], {"prompt_templates": ["{}"]})
    spec = get_method("ca")
    config = spec.config_class(concept_templates=[shape, color])
    spec.check_request(EraseRequest(concepts=["circle", "red"], anchors=["thing", "purple"]), config)
    with pytest.raises(ErasekitError, match="one list per concept"):
        spec.check_request(EraseRequest(concepts=["circle", "red", "cross"], anchors=["thing"] * 3), config)
    with pytest.raises(ValueError, match="concept_templates"):
        spec.config_class(concept_templates=[["no slot"]])


def test_ca_pairs_each_concept_with_its_own_templates():
    from erasekit.methods.ca.config import CaConfig
    from erasekit.methods.ca.method import prompt_pairs

    config = model_layer("toyworld", "ca", ["circle", "red"], {})
    color_pairs = prompt_pairs("red", "purple", CaConfig(), config["concept_templates"][1])
    assert all(t == a.replace("purple", "red") and "purple" not in t for a, t in color_pairs)
    assert any(" circle" in a or " square" in a for a, _ in color_pairs)  # a colour's captions name a shape


def test_patch_records_the_final_config_and_each_values_layer(tiny_model):
    from erasekit import api

    tiny_model.profile = "toyworld"  # the tiny model stands in for a toy world: its layer applies
    patch = api.erase(tiny_model, "abo", EraseRequest(concepts=["circle"], anchors=["square"]),
                      {"sampling_steps": 3, "t_warmup": 0, "pool_size": 2}, overrides={"steps": "2"}, progress=False)
    sources = patch.info["config_sources"]
    assert patch.config["lr"] == model_layer("toyworld", "abo", ["circle"], {})["lr"]
    assert sources["lr"] == "model:toyworld" and sources["steps"] == "set" and sources["pool_size"] == "request"
    assert patch.config["steps"] == 2


def test_ls_config_shows_the_effective_defaults(capsys):
    from erasekit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["ls", "config", "abo", "--model", "toyworld", "--set", "lam=2"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()}  # field, value, layer, help …
    assert rows["lr"][2] == "model:toyworld" and rows["lam"][1:3] == ["2.0", "set"]
    assert rows["gamma1"][2] == "paper"


def readme_erase_command() -> list[str]:
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("erasekit erase --model toyworld --method abo "):
            return shlex.split(line.split("#")[0])[1:]
    raise AssertionError("the README shows no toy-world abo erase command")


def test_readme_erase_command_uses_the_toy_settings_and_checks_itself(tmp_path, capsys, monkeypatch):
    """The README's command verbatim (few steps): the toy lr is recorded, and the check says 2 steps erased
    nothing, loudly."""
    from erasekit.cli.main import main
    from erasekit.core.patch import Patch

    monkeypatch.chdir(tmp_path)
    args = readme_erase_command() + ["--set", "steps=2", "--set", "pool_size=2"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 0, err
    out = args[args.index("--out") + 1]
    patch = Patch.load(tmp_path / out)
    assert patch.config["lr"] == model_layer("toyworld", "abo", ["circle"], {})["lr"] != AboConfig().lr
    assert patch.info["config_sources"]["lr"] == "model:toyworld"
    assert "relative weight change" in err
    check = patch.info["check"][0]
    assert check["base"]["rate"] > 0.5 and check["within_noise"]
    assert "WARNING: the patch did not measurably erase 'circle'" in err


def test_check_refuses_a_concept_no_detector_measures(tiny_dir, capsys):
    from erasekit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["erase", "--model", str(tiny_dir), "--method", "abo", "--concept", "circle", "--anchor", "square",
              "--check", "--out", "p.safetensors"])
    assert exc.value.code == 2 and "--check" in capsys.readouterr().err


def test_colour_suite_measures_the_colour_and_the_shapes_drawn_in_it():
    from erasekit.eval.suites import Concept, toyworld_suite

    suite = toyworld_suite(Concept("color", "red"))
    assert all("red" in p.prompt.split() and p.labels["color"] == "red" for p in suite.groups["target"])
    assert {p.labels["shape"] for p in suite.groups["target"]} == {"circle", "square", "triangle", "cross",
                                                                   "diamond"}
    assert all("red" not in p.prompt.split() and p.labels["color"] != "red" for p in suite.groups["other"])
    assert all("red" not in p.prompt.split() for p in suite.groups["misspelling"])


def test_target_retain_accuracy_reads_the_target_prompts_other_labels():
    import numpy as np

    from erasekit.core.data import SamplingSettings
    from erasekit.eval.evaluate import score
    from erasekit.eval.suites import Concept, toyworld_suite

    class Fixed:
        def __init__(self, shape_ok):
            self.shape_ok = shape_ok

        def detect(self, images):
            n = len(images)
            return {"color": np.array(["green"] * n), "shape": np.array(["circle" if self.shape_ok else "blob"] * n),
                    "background": np.array(["snow"] * n)}

    suite = toyworld_suite(Concept("color", "red"))
    suite.groups = {"target": [p for p in suite.groups["target"] if p.labels["shape"] == "circle"]}
    settings = SamplingSettings(seeds=[0])
    images = {"target": torch.zeros(len(suite.groups["target"]), 3, 8, 8)}
    good, _ = score(suite, Fixed(True), settings, images, images, 8)
    bad, _ = score(suite, Fixed(False), settings, images, images, 8)
    snow = sum(p.labels["background"] == "snow" for p in suite.groups["target"]) / len(suite.groups["target"])
    assert good["target_rate"] == 0.0
    assert good["target_retain_accuracy"] == pytest.approx((1 + snow) / 2)
    assert bad["target_retain_accuracy"] == pytest.approx(snow / 2)


def test_trajectory_pool_is_a_function_of_seed_and_refresh(tiny_model):
    """A run resumed at step 2 (new pool object, generator restored) draws exactly what it would have."""
    from erasekit.core.schedule import Schedule
    from erasekit.core.trajectory import TrajectoryPool

    schedule = Schedule(tiny_model, 4)
    cond = tiny_model.encode(["", "circle"])

    def step_fn(x, t, i, rows):
        eps = tiny_model.eps(x, t, cond)
        return eps[1], eps[0] * (1 + rows.view(-1, 1, 1, 1).float())

    def pool():
        return TrajectoryPool(tiny_model, schedule, step_fn, size=3, refresh=2, seed=5, n_groups=2)

    first, gen = pool(), torch.Generator().manual_seed(0)
    drawn = [first.draw(step, gen, 2) for step in range(4)]
    resumed, gen = pool(), torch.Generator().manual_seed(0)
    for _ in range(2):  # the generator state the checkpoint holds after steps 0 and 1
        torch.randint(3, (2,), generator=gen), torch.randint(0, 4, (2,), generator=gen)
    for step in (2, 3):
        again = resumed.draw(step, gen, 2)
        assert torch.equal(again[2], drawn[step][2]) and torch.equal(again[3][0], drawn[step][3][0])
    assert not torch.equal(drawn[0][2], drawn[2][2])  # a new pool after `refresh` steps
    assert pool().groups.tolist() == [0, 1, 0]
    # more concepts than trajectories: the pool grows to one trajectory per concept
    assert TrajectoryPool(tiny_model, schedule, step_fn, size=2, refresh=1, seed=0, n_groups=3).groups.tolist() == [
        0, 1, 2]


POOLED = {  # method -> (request, config): trajectories of a frozen model, mini-batches from the pool
    "abo": (EraseRequest(concepts=["circle", "cross"], anchors=["square"]),
            {"sampling_steps": 3, "t_warmup": 0}),
    "esd": (EraseRequest(concepts=["circle", "cross"]), {"sampling_steps": 3, "sample_from": "base"}),
    "sdd": (EraseRequest(concepts=["circle", "cross"]), {"sampling_steps": 3, "sample_from": "base"}),
}


@pytest.mark.parametrize("method", sorted(POOLED))
def test_pooled_mini_batches_train_and_resume_exactly(tiny_model, tmp_path, method):
    from erasekit.core.edit import RunOptions
    from erasekit.registry import get_method

    spec = get_method(method)
    request, values = POOLED[method]
    cfg = spec.config_class(**values, steps=4, lr=1e-3, pool_size=3, pool_refresh=2, batch_size=2,
                            checkpoint_every=2)
    full = spec.erase(tiny_model, request, cfg, RunOptions(progress=False))
    half = spec.config_class(**{**cfg.__dict__, "steps": 2})
    spec.erase(tiny_model, request, half, RunOptions(tmp_path, progress=False))  # "killed" at step 2
    resumed = spec.erase(tiny_model, request, cfg, RunOptions(tmp_path, progress=False))
    assert any(d.abs().max() > 0 for d in full.deltas.values())
    assert all(torch.equal(full.deltas[n], resumed.deltas[n]) for n in full.deltas)
    assert json.loads(json.dumps(full.config))["batch_size"] == 2


@pytest.mark.parametrize("method", ["esd", "sdd"])
def test_trajectories_of_the_model_being_trained_are_not_pooled(method):
    from erasekit.registry import get_method

    with pytest.raises(ValueError, match="need sample_from='base'"):
        get_method(method).config_class(batch_size=2)


def test_every_config_field_has_one_line_of_help():
    from erasekit.methods.field_help import field_help, missing_help
    from erasekit.registry import list_methods

    for spec in list_methods():
        config = spec.config_class()
        assert missing_help(config) == [], spec.name
        for name in (f.name for f in dataclasses.fields(config)):
            assert "\n" not in field_help(config, name) and len(field_help(config, name)) <= 110, (spec.name, name)


def test_ls_config_prints_each_fields_help(capsys):
    from erasekit.cli.main import main

    with pytest.raises(SystemExit):
        main(["ls", "config", "abo", "--model", "toyworld"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "model:toyworld" in lines["lr"] and "learning rate" in lines["lr"]
    assert "λ: weight of the preservation" in lines["lam"]
