"""Prompt fidelity, synonyms, implicit attribute, classifier accuracy and speed of the toy world.

Writes benchmarks/results/toyworld_fidelity.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # optional image backends are never used here

import numpy as np
import torch

from erasekit.api import load_model, parse_seeds
from erasekit.core.sampler import generate_images
from erasekit.core.sources import TOYWORLD_VARIANTS, resolve_source
from erasekit.eval.results import write_result
from erasekit.toyworld import domain, fidelity
from erasekit.toyworld.models import AttributeClassifier, classifier_path

# Where results go, wherever the script is started from (the repo root or benchmarks/).
RESULTS = Path(__file__).resolve().parent / "results"


def classifier_accuracy(model, classifier, n: int, seed: int) -> dict[str, float]:
    images, _, labels = domain.sample_dataset(n, seed=seed)
    x = torch.from_numpy(images)
    with torch.no_grad():
        recon = model.decode(model.encode_images(x))
        direct, through_vae = classifier.predict(x), classifier.predict(recon)
    out = {}
    for name in domain.ATTRIBUTES:
        out[f"classifier_accuracy_{name}"] = float((direct[name].numpy() == labels[name]).mean())
        out[f"classifier_accuracy_recon_{name}"] = float((through_vae[name].numpy() == labels[name]).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="toyworld", help="'toyworld' (shipped) or a trained pipeline directory")
    parser.add_argument("--seeds", default="0-1", help="seeds per prompt (150 named prompts x seeds images)")
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    model = load_model(args.model, device="cpu")
    classifier = AttributeClassifier.load(classifier_path())
    kw = dict(steps=args.steps, guidance=args.guidance)

    metrics: dict[str, float] = {}
    prompts, pred = fidelity.classify(model, classifier, fidelity.named_prompts(), seeds, **kw)
    for name in domain.ATTRIBUTES:
        metrics[f"fidelity_{name}"] = fidelity.agreement(prompts, pred, name)
    per_shape = {}
    for s, shape in enumerate(domain.ATTRIBUTES["shape"]):
        idx = [i for i, p in enumerate(prompts) if p.labels["shape"] == s]
        per_shape[shape] = float(np.mean(pred["shape"][idx] == s))
    metrics["fidelity_shape_min"] = min(per_shape.values())
    metrics["n_fidelity"] = len(prompts)

    prompts, pred = fidelity.classify(model, classifier, fidelity.synonym_prompts(), seeds, **kw)
    metrics["fidelity_synonym"] = fidelity.agreement(prompts, pred, "shape")
    metrics["n_synonym"] = len(prompts)

    prompts, pred = fidelity.classify(model, classifier, fidelity.implicit_prompts(context=True), seeds[:1], **kw)
    metrics["implicit_rate_context"] = fidelity.striped_rate(pred)
    metrics["n_implicit_context"] = len(prompts)
    prompts, pred = fidelity.classify(model, classifier, fidelity.implicit_prompts(context=False), seeds, **kw)
    metrics["implicit_rate_plain"] = fidelity.striped_rate(pred)
    metrics["n_implicit_plain"] = len(prompts)

    metrics.update(classifier_accuracy(model, classifier, n=2000, seed=777))

    speed_prompts = [p.prompt for p in fidelity.named_prompts()[:64]]
    start = time.perf_counter()
    generate_images(model, speed_prompts, list(range(64)), steps=35, guidance=7.5, batch_size=64, progress=False)
    metrics["seconds_generate_64"] = round(time.perf_counter() - start, 2)

    training = Path(resolve_source(args.model)) / "training.json"
    run = {
        "method": None,
        "model": model.source,
        "concepts": [],
        "config": {"steps": args.steps, "guidance": args.guidance},
        "seeds": seeds,
        "metrics": {**metrics, "fidelity_per_shape": per_shape},
    }
    extra = {"toyworld_training": json.loads(training.read_text()) if training.exists() else None}
    name = args.model if args.model in TOYWORLD_VARIANTS else "toyworld"
    path = write_result(f"{name}_fidelity", [run], metrics={"seconds_generate_64": metrics["seconds_generate_64"]},
                        out_dir=args.out, extra=extra)
    for key, value in metrics.items():
        print(f"{key:36s} {value}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
