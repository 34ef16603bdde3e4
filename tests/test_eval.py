import numpy as np
import pytest
import torch

from erasekit.errors import ErasekitError
from erasekit.eval.metrics import ssim_per_image, ssim_window, wilson_interval
from erasekit.eval.suites import Concept, load_suite, resolve_suite, toyworld_suite


def test_ssim_identical_is_one_and_noise_lowers_it():
    a = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ssim_per_image(a, a), torch.ones(3))
    b = (a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert torch.all(ssim_per_image(a, b) < 0.9)
    assert ssim_window(32) == 7 and ssim_window(512) == 25


def test_wilson_interval_known_case():
    lo, hi = wilson_interval(8, 10)  # textbook value: (0.490, 0.943)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.17


def test_toyworld_suite_groups_and_labels():
    suite = toyworld_suite(Concept("shape", "circle"), anchor=Concept("shape", "square"))
    assert {"target", "synonym", "misspelling", "paraphrase", "other"} <= set(suite.groups)
    assert all("circle" in p.prompt for p in suite.groups["target"])
    assert all("disc" in p.prompt and "circle" not in p.prompt for p in suite.groups["synonym"])
    assert all("circle" not in p.prompt.split() for p in suite.groups["misspelling"])
    assert all(p.labels["shape"] != "circle" for p in suite.groups["other"])
    assert toyworld_suite(Concept("shape", "circle")).groups == suite.groups  # deterministic
    striped = toyworld_suite(Concept("pattern", "striped"))
    assert all("striped" not in p.prompt and "solid" not in p.prompt for p in striped.groups["implicit"])


def test_suite_spec_also_drops_jointly_erased_concepts_from_other():
    full = resolve_suite("toyworld:pattern=striped")
    joint = resolve_suite("toyworld:pattern=striped:also=shape=circle:also=shape=cross")
    kept = {p.labels["shape"] for p in joint.groups["other"]}
    assert kept == {"square", "triangle", "diamond"}
    assert len(joint.groups["other"]) == sum(p.labels["shape"] in kept for p in full.groups["other"])
    assert joint.groups["target"] == full.groups["target"]
    with pytest.raises(ErasekitError, match="not a toy-world attribute"):
        resolve_suite("toyworld:shape=circle:also=shape=blob")
    with pytest.raises(ErasekitError, match="bad suite spec"):
        resolve_suite("toyworld:shape=circle:with=shape=cross")


def test_suite_yaml_round_trip(tmp_path):
    suite = resolve_suite("toyworld:pattern=striped:anchor=pattern=solid")
    again = load_suite(suite.to_yaml(tmp_path / "s.yaml"))
    assert again.groups == suite.groups and again.anchor == Concept("pattern", "solid")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name: x\nversion: 1\n  detector: [", "line"),
        ("- just a list", "mapping"),
        ("name: x\nversion: 1\ndetector: d\nconcept: {attribute: a, value: b}\ngroups: {tagret: [a]}", "did you mean"),
        ("name: x\nversion: 1\ndetector: d\nconcept: {attribute: a, value: b}\ngroups: {other: [a]}", "target"),
    ],
)
def test_bad_suite_files_name_file_and_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ErasekitError, match=fragment) as exc:
        load_suite(path)
    assert "bad.yaml" in str(exc.value)


def test_classifier_rates_on_rendered_images_are_known():
    from erasekit.core.sources import toyworld_dir

    if not (toyworld_dir().parent / "toyworld-classifier.safetensors").exists():
        pytest.skip("classifier not present")
    from erasekit.eval.detectors import ToyworldDetector
    from erasekit.toyworld import domain

    # 30 striped and 10 solid renders: the detector's striped rate must be 0.75.
    scenes = [domain.Scene(i % 5, i % 5, i % 3, int(i < 30), 16.0, 16.0, 10.0) for i in range(40)]
    images = torch.from_numpy(np.stack([domain.render(s, i) for i, s in enumerate(scenes)]))
    found = ToyworldDetector().detect(images)
    assert float(np.mean(found["pattern"] == "striped")) == pytest.approx(0.75)


def test_eval_cli_on_tiny_model_uses_cache(tiny_dir, tmp_path, monkeypatch, capsys):
    """Wire-up on a tiny random model: a suite file, a patch, base images cached once."""
    import json

    from erasekit.cli.main import main
    from erasekit.core.model import DiffusionModel
    from erasekit.core.patch import Patch
    from erasekit.core.scopes import select
    from erasekit.eval import detector_names, detectors

    class FixedDetector:
        name = "fixed"

        def detect(self, images):
            bright = (images.mean(dim=(1, 2, 3)) > images.mean()).numpy()
            return {"shape": np.where(bright, "circle", "square")}

        def settings(self):
            return {"name": self.name, "threshold": "mean brightness"}

    monkeypatch.setitem(detector_names.DETECTORS, "fixed", ("FixedDetector", "a fixed test detector"))
    monkeypatch.setattr(detectors, "FixedDetector", FixedDetector, raising=False)
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: t\nversion: 1\ndetector: fixed\nconcept: {attribute: shape, value: circle}\n"
                     "groups:\n  target: [a red circle, a blue circle]\n"
                     "  other: [{prompt: a red box, labels: {shape: square}}]\n")
    model = DiffusionModel.load(tiny_dir)
    params = select(model.named_modules(), "to_out").params
    base = {n: p.detach().clone() for n, p in params.items()}
    patch = Patch.from_weights(base, {n: b + 0.3 for n, b in base.items()}, "test", {}, ["circle"])
    patch_file = patch.save(tmp_path / "p.safetensors")
    args = ["eval", "--model", str(tiny_dir), "--patch", str(patch_file), "--suite", str(suite), "--seeds", "0-1",
            "--steps", "2", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "ev")]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert result["metrics"]["n_target"] == 4 and result["details"]["target_rate"]["n"] == 4
    from erasekit.eval.metric_registry import METRICS

    unregistered = [k for k in result["metrics"] if k not in METRICS and not k.startswith("n_")]
    assert unregistered == [], "every metric an evaluation computes is in the registry"
    assert all(METRICS[k].count in result["metrics"] for k in result["metrics"] if k in METRICS and METRICS[k].count)
    assert 0 < result["metrics"]["ssim_other"] < 1  # the patch changed the images
    assert result["details"]["detector"] == {"name": "fixed", "threshold": "mean brightness"}
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    with pytest.raises(SystemExit):
        main(args[:-1] + [str(tmp_path / "ev2")])
    second = json.loads((tmp_path / "ev2" / "results.json").read_text())
    assert second["metrics"] == result["metrics"]
    # Release gates: a failed or unmeasured requirement exits 1 with one line; the results are still written.
    gate = args[:-2] + ["--require", f"ssim_other>={result['metrics']['ssim_other'] + 0.01:.4f}",
                        "--require", "target_rate<=1", "--require", "clip_score>=0.2"]
    with pytest.raises(SystemExit) as exc:
        main(gate + ["--out", str(tmp_path / "ev3")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and (tmp_path / "ev3" / "results.json").exists()
    assert err[-1].startswith("erasekit: requirement failed: ssim_other = ") and "clip_score not measured" in err[-1]
    assert "target_rate" not in err[-1]
    with pytest.raises(SystemExit) as exc:
        main(args[:-2] + ["--require", "ssim_other<=1", "--require", "target_rate>=0", "--out", str(tmp_path / "ev4")])
    assert exc.value.code == 0 and "requirements hold" in capsys.readouterr().out


def test_report_marks_best_and_embeds_grids(tmp_path):
    from PIL import Image

    from erasekit.eval.report import render_report

    grid = tmp_path / "target.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(grid)
    runs = [{"name": "a", "metrics": {"target_rate": 0.1, "ssim_other": 0.8}, "grids": {"target": grid},
             "timeline": [{"step": 10, "target_rate": 0.9}, {"step": 20, "target_rate": 0.4}]},
            {"name": "b", "metrics": {"target_rate": 0.3, "ssim_other": 0.9}}]
    page = render_report(runs, tmp_path / "r.html").read_text()
    assert page.count('<svg class="curve"') == 1 and "polyline" in page
    assert page.count("<tr>") == 3  # header + one row per run
    assert '<td class="best">0.100</td>' in page and '<td class="best">0.900</td>' in page
    assert page.count("data:image/png;base64,") == 1


def test_report_shows_every_metric_its_intervals_and_the_tradeoff(tmp_path):
    from erasekit.api import image_grid
    from erasekit.eval.report import render_report

    metrics = {"target_rate": 0.1, "ssim_other": 0.8, "fid_other": 1.2, "kid_other": 0.01, "clip_score": 0.3,
               "ua": 0.9, "ira": 0.95, "cra": 1.0}
    runs = [{"name": "abo", "metrics": metrics, "details": {"target_rate": {"value": 0.1, "n": 40,
                                                                           "ci95": [0.04, 0.23]}}},
            {"name": "esd", "metrics": {"target_rate": 0.4, "ssim_other": 0.9}}]
    page = render_report(runs, tmp_path / "r.html").read_text()
    for key in metrics:
        assert f"<th>{key}</th>" in page, key
    assert "<small>[0.04, 0.23]</small>" in page
    plot = page[page.index('class="tradeoff"'):]
    assert plot.count("<circle") == 2 and plot.count("<line") == 1  # one point per run, one interval known
    assert "<div class='scroll'><table id='metrics'>" in page
    small = torch.rand(3, 3, 32, 32)
    assert image_grid(small, columns=3).size == (3 * 128 + 4 * 2, 128 + 2 * 2)  # toy tiles drawn at 128 px
    assert image_grid(torch.rand(1, 3, 256, 256), columns=1).size == (260, 260)


def test_report_overlays_timelines_of_one_case_in_one_chart(tmp_path):
    from erasekit.eval.report import render_report

    def run(name, group, rates):
        return {"name": name, "group": group, "metrics": {"target_rate": rates[-1]},
                "timeline": [{"step": 10 * (i + 1), "target_rate": r, "ssim_other": 0.9} for i, r in enumerate(rates)]}

    runs = [run("abo", "circle", [0.9, 0.2]), run("esd", "circle", [0.5, 0.0]), run("abo", "striped", [1.0, 0.1])]
    page = render_report(runs, tmp_path / "r.html").read_text()
    assert page.count('<svg class="curve"') == 4  # (target_rate, ssim_other) × (circle, striped)
    assert page.count("<polyline") == 6  # a line per run in each of its group's charts
    assert "(circle): one line per run" in page and "(striped): one line per run" in page


def test_feature_distances_zero_for_same_set_and_grow_with_shift():
    from erasekit.eval.metrics import feature_distances

    gen = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 8, 8, generator=gen)
    flat = lambda x: x.reshape(len(x), -1)[:, :16]  # noqa: E731 - a fixed linear "feature network"
    same = feature_distances(real, real.clone(), flat, image_size=8, subset_size=20)
    shifted = feature_distances(real, (real + 0.3).clamp(0, 1), flat, image_size=8, subset_size=20)
    assert abs(same["fid"]) < 1e-3  # KID's subsets make it only near zero: compare it to the shifted case
    assert shifted["fid"] > 0.5 and shifted["kid"] > 10 * abs(same["kid"])


def test_shipped_nudity_suite_is_valid():
    suite = resolve_suite("nudity-sd")
    assert suite.detector == "nudenet" and suite.concept == Concept("nudity", "exposed")
    assert {"target", "implicit", "other"} <= set(suite.groups)
    assert not any("nude" in p.prompt or "naked" in p.prompt for p in suite.groups["implicit"])


def test_nudenet_finds_nothing_on_plain_images():
    pytest.importorskip("nudenet")
    from erasekit.eval.detectors import NudeNetDetector

    detector = NudeNetDetector()
    assert detector.settings()["threshold"] == 0.6 and "ANUS_EXPOSED" in detector.settings()["strict_classes"]
    images = torch.stack([torch.full((3, 64, 64), v) for v in (0.0, 0.5, 1.0)])
    found = detector.detect(images)
    assert list(found["nudity"]) == ["none"] * 3 and list(found["nudity_strict"]) == ["none"] * 3
    counts = detector.class_counts(images)
    assert set(counts) == {"0.45", "0.6", "0.7"} and all(not c for c in counts.values())
    exposed = detector.exposed([{"class": "BUTTOCKS_EXPOSED", "score": 0.5}, {"class": "FACE_FEMALE", "score": 0.9}],
                               0.45)
    assert exposed == {"BUTTOCKS_EXPOSED"}


def test_efficientnet_detector_loads_shipped_weights_and_names_imagenette_classes(monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    from erasekit.eval.detectors import ImageNetDetector, get_detector

    detector = get_detector("efficientnet-lite0")  # strict state-dict load: a layout mismatch fails here
    assert isinstance(detector, ImageNetDetector)
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    x = detector._inputs(torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)]))
    assert x.shape[-1] == 224 and x[0].max() == pytest.approx(-127 / 128) and x[1].min() == pytest.approx(1.0)
    together = detector.logits(images)
    detector.batch_size = 1  # eval mode: an image's logits do not depend on its batch
    torch.testing.assert_close(detector.logits(images), together, atol=1e-4, rtol=1e-4)
    assert detector.features(images).shape == (3, 1280)
    monkeypatch.setattr(detector, "logits", lambda imgs: torch.nn.functional.one_hot(
        torch.tensor([497, 5, 701]), 1000).float())
    assert list(detector.detect(images)["object"]) == ["church", "imagenet-5", "parachute"]


@pytest.mark.skipif(not __import__("erasekit.core.sources", fromlist=["x"]).toyworld_dir().joinpath(
    "model_index.json").exists(), reason="toy-world model not present")
def test_accelerate_two_processes_give_the_same_metrics(tmp_path):
    """`accelerate launch --num_processes 2` shards prompt × seed and gathers: same numbers as one process."""
    import json
    import os
    import subprocess
    import sys

    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nversion: 1\ndetector: toyworld-classifier\nconcept: {attribute: shape, value: circle}\n"
                     "groups:\n  target: [a red circle on snow, a blue circle on sand, a green disc]\n"
                     "  other: [{prompt: a blue cross on sand, labels: {shape: cross}}]\n")
    common = ["eval", "--model", "toyworld", "--suite", str(suite), "--seeds", "0-2", "--steps", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "erasekit", *common, "--cache", str(tmp_path / "c1"), "--out", str(tmp_path / "one")]
    # --multi_gpu is accelerate's multi-process launcher; without GPUs the processes join one CPU (gloo) group
    two = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m", "erasekit",
           *common, "--cache", str(tmp_path / "c2"), "--out", str(tmp_path / "two")]
    for cmd in (one, two):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    a_doc = json.loads((tmp_path / "one" / "results.json").read_text())
    b_doc = json.loads((tmp_path / "two" / "results.json").read_text())
    assert (a_doc["processes"], b_doc["processes"]) == (1, 2)
    a, b = a_doc["metrics"], b_doc["metrics"]
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-4), key
    assert len(list((tmp_path / "c2").glob("*.safetensors"))) == 2  # one writer, one file per group


def test_i2p_csv_prompts_keep_their_own_seed_and_guidance(tiny_model, tmp_path):
    from erasekit.core.data import SamplingSettings
    from erasekit.core.sampler import generate_images
    from erasekit.eval.evaluate import _generate
    from erasekit.eval.suites import load_i2p_csv

    path = tmp_path / "i2p.csv"
    path.write_text('prompt,categories,sd_seed,sd_guidance_scale\n"a red circle, at night",sexual,11,7\n'
                    "a blue box,violence,12,5.5\na green cross,\"sexual,shocking\",13,9\n")
    suite = load_i2p_csv(path, category="sexual")
    assert [p.prompt for p in suite.groups["implicit"]] == ["a red circle, at night", "a green cross"]
    assert [(p.seed, p.guidance) for p in suite.groups["implicit"]] == [(11, 7.0), (13, 9.0)]
    images = _generate(tiny_model, suite.groups["implicit"], SamplingSettings(seeds=[0, 1, 2], steps=2), False)
    assert len(images) == 2  # one image per I2P prompt, not one per run seed
    expected = generate_images(tiny_model, ["a green cross"], [13], steps=2, guidance=9.0, progress=False)
    torch.testing.assert_close(images[1], expected[0])
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,seed\nx,1\n")
    with pytest.raises(ErasekitError, match="missing column"):
        load_i2p_csv(bad)


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (.ci/run installs Debian's package)")
def test_report_renders_in_headless_chromium(tmp_path):
    import re
    import subprocess

    from PIL import Image

    from erasekit.eval.report import render_report

    grids = {}
    for group, colour in (("target", (200, 30, 30)), ("other", (30, 30, 200))):
        grids[group] = tmp_path / f"{group}.png"
        Image.new("RGB", (64, 32), colour).save(grids[group])
    runs = [{"name": "abo", "metrics": {"target_rate": 0.1, "ssim_other": 0.9}, "grids": grids},
            {"name": "esd", "metrics": {"target_rate": 0.2, "ssim_other": 0.8}}]
    page = render_report(runs, tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-images="2"' in dom and 'data-broken-images="0"' in dom
    assert 'data-visible-columns="3"' in dom and 'data-plots="1"' in dom  # run + 2 metric columns, the plot
    table = re.search(r"<table id=\"metrics\">.*?</table>", dom, re.S).group(0)
    assert table.count("<tr>") == 1 + len(runs)
    # The self-check does notice a broken image.
    from erasekit.eval.report import SELF_CHECK

    broken = tmp_path / "broken.html"
    broken.write_text(f"<html><head>{SELF_CHECK}</head><body><img src='data:image/png;base64,AAAA'></body></html>")
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", broken.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-broken-images="1"' in dom
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1000,700", page.as_uri()],
                   capture_output=True, timeout=120)
    assert Image.open(shot).size == (1000, 700)


def test_label_agreement_splits_same_and_other_kind():
    from erasekit.core.data import SamplingSettings
    from erasekit.eval.evaluate import _label_agreement
    from erasekit.eval.suites import Prompt

    prompts = [Prompt("a red box", {"shape": "square", "color": "red"}), Prompt("a blue cross", {"shape": "cross"})]
    found = {"shape": np.array(["square", "circle", "cross", "cross"]), "color": np.array(["red", "red", "blue", "x"])}
    hits, same = _label_agreement(prompts, found, SamplingSettings(seeds=[0, 1]), "shape")
    # images: (p0,s0) (p0,s1) (p1,s0) (p1,s1); p0 has two labels, p1 one.
    assert hits.tolist() == [True, True, False, True, True, True]
    assert same.tolist() == [True, False, True, False, True, True]
    assert hits[same].mean() == 0.75 and hits[~same].mean() == 1.0  # IRA, CRA


def test_timeline_scores_live_weights_during_training(tiny_model):
    from erasekit.api import erase
    from erasekit.core.data import SamplingSettings
    from erasekit.eval.evaluate import Timeline
    from erasekit.eval.suites import Prompt, Suite
    from erasekit.methods.abo.config import AboConfig
    from erasekit.request import EraseRequest

    class Bright:
        def detect(self, images):
            return {"shape": np.where(images.mean(dim=(1, 2, 3)).numpy() > 0.5, "circle", "square")}

        def settings(self):
            return {"name": "bright"}

    suite = Suite("t", 1, "bright", Concept("shape", "circle"), None,
                  {"target": [Prompt("a red circle")], "other": [Prompt("a blue box", {"shape": "square"})]})
    timeline = Timeline(tiny_model, suite, Bright(), SamplingSettings(seeds=[0, 1], steps=2))
    erase(tiny_model, "abo", EraseRequest(concepts=["circle"], anchors=["square"]),
          AboConfig(steps=4, sampling_steps=3, lr=0.05, t_warmup=0),
          progress=False, callback=timeline, callback_every=2)
    assert [p["step"] for p in timeline.points] == [2, 4]
    assert all(0 <= p["target_rate"] <= 1 for p in timeline.points)
    assert timeline.points[-1]["ssim_other"] < 1.0  # the live weights had moved when scored


@pytest.fixture
def tiny_clip(tokenizer_dir, tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=tok.model_max_length, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(tmp_path / "clip")
    return tmp_path / "clip"


def test_clip_score_and_zero_shot_with_a_local_tiny_clip(tiny_clip):
    from erasekit.eval.clip import ClipDetector, clip_score

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    score = clip_score(images, ["a red circle", "a blue box", "a green cross"], tiny_clip)
    assert 0.0 <= score <= 100.0
    detector = ClipDetector(tiny_clip, {"shape": ["circle", "square", "cross"]})
    found = detector.detect(images)
    assert found["shape"].shape == (3,) and set(found["shape"]) <= {"circle", "square", "cross"}
    # The detector's choice is the argmax of its own similarities: recompute it independently.
    sims = detector.image_features(images) @ detector.text["shape"].T
    assert list(found["shape"]) == [["circle", "square", "cross"][i] for i in sims.argmax(-1).tolist()]


def test_missing_clip_is_one_clear_error(tmp_path):
    from erasekit.eval.clip import clip_score

    with pytest.raises(ErasekitError, match="no CLIP model"):
        clip_score(torch.rand(1, 3, 8, 8), ["x"], tmp_path / "nowhere")


def test_result_command_leaves_out_the_output_directory():
    from erasekit.eval.results import without_out_option

    argv = ["bench.py", "--threads", "1", "--out", "/somewhere/x", "--seeds", "0-3", "--out=/else"]
    assert without_out_option(argv) == ["bench.py", "--threads", "1", "--seeds", "0-3"]


def test_evaluate_measures_only_the_groups_asked_for(tiny_model, monkeypatch):
    import numpy as np

    import erasekit.eval.detectors as detectors
    from erasekit import api
    from erasekit.errors import ErasekitError

    class Blank:  # the tiny model's 16 px images are not the toy classifier's
        def detect(self, images):
            return {a: np.array(["none"] * len(images)) for a in ("shape", "color", "background")}

        def settings(self):
            return {}

    monkeypatch.setattr(detectors, "get_detector", lambda name: Blank())
    result = api.evaluate(tiny_model, [], "toyworld:color=red", seeds=[0], steps=2, cache_dir=None, progress=False,
                          groups=["target", "other"])
    assert set(result["images"]["base"]) == {"target", "other"}
    assert "misspelling_rate" not in result["metrics"] and "target_rate" in result["metrics"]
    with pytest.raises(ErasekitError, match="groups must include 'target'"):
        api.evaluate(tiny_model, [], "toyworld:color=red", seeds=[0], steps=2, groups=["other", "synonym"])
    fewer = api.evaluate(tiny_model, [], "toyworld:color=red", seeds=[0], steps=2, cache_dir=None, progress=False,
                         groups=["target", "other"], prompts_per_group={"other": 7})
    assert fewer["metrics"]["n_other"] == 7 and fewer["metrics"]["n_target"] == result["metrics"]["n_target"]
    # the images are those of the same prompts measured in full (up to batching): a subset, not other images
    kept = [i * result["metrics"]["n_other"] // 7 for i in range(7)]
    assert torch.allclose(fewer["images"]["base"]["other"], result["images"]["base"]["other"][kept], atol=1e-4)
    with pytest.raises(ErasekitError, match="prompts_per_group"):
        api.evaluate(tiny_model, [], "toyworld:color=red", seeds=[0], steps=2, prompts_per_group={"anchor": 3})


def test_spread_keeps_evenly_spaced_items_covering_the_list():
    from erasekit.api import spread

    assert spread(list(range(60)), 30) == list(range(0, 60, 2))
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 5) == [1, 2]
    shapes = [s for s in "ABCD" for _ in range(15)]  # a suite's order: grouped by an attribute
    assert set(spread(shapes, 8)) == set("ABCD")


def test_the_demo_draws_every_shape_colour_and_background_among_its_other_prompts():
    from erasekit.api import spread
    from erasekit.cli.main import DEMO_OTHER_PROMPTS
    from erasekit.eval.suites import resolve_suite
    from erasekit.toyworld import domain

    suite = resolve_suite("toyworld:shape=circle:anchor=shape=square")
    kept = " ".join(p.prompt for p in spread(suite.groups["other"], DEMO_OTHER_PROMPTS))
    words = [*(s for s in domain.SHAPES if s != "circle"), *domain.COLORS, *domain.BACKGROUNDS]
    assert [w for w in words if f" {w} " not in f" {kept} "] == []
    assert DEMO_OTHER_PROMPTS < len(suite.groups["other"])
