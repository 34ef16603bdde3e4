"""Concept purification on the toy world: how many rendered striped images lose their stripes,
and how close they stay to the input, as the noise level grows.

For the paper's purification patch (λ = 0, cross-attention scope), the main striped patch
(λ = 5, `to_out`) and the unedited model as a control: each strength (share of the 35 DDIM
steps noised) reached by DDIM inversion or by random forward noise (SDEdit), regenerating
conditioned on ∅ (CFG 1) or on "striped" (CFG 7.5). Writes
benchmarks/results/purify_toyworld.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses

import common
from abo_toyworld import CASES, PURIFY_CONFIG, purification_metrics, striped_renders
from common import erase_timed

from erasekit.core import patch as patching
from erasekit.eval.detectors import get_detector
from erasekit.eval.results import write_result

STRENGTHS = (0.45, 0.6, 0.8, 1.0)
CONDITIONS = (("", 1.0), ("striped", 7.5))
PATCHES = {"paper": ("paper (λ 0, xattn)", PURIFY_CONFIG), "main": ("main (λ 5, to_out)", {}),
           "none": ("none (base model)", None)}


def oracle_run(images, detector, n_images: int) -> dict:
    """The best purification can do: the same scenes rendered solid, compared with the striped input."""
    from erasekit.eval.metrics import ssim_per_image

    solid = striped_renders(n_images, pattern="solid")
    removed = detector.detect(solid)["pattern"] != "striped"
    return {"method": "oracle", "case": "purify oracle (same scenes rendered solid)", "model": "toyworld",
            "n_images": n_images, "metrics": {"stripes_removed": float(removed.mean()),
                                              "ssim_input": ssim_per_image(images, solid).mean().item()}}


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--images", type=int, default=64, help="rendered striped images per measurement")
    parser.add_argument("--patches", default="oracle," + ",".join(PATCHES),
                        help=f"comma-separated, of oracle, {', '.join(PATCHES)}")
    args = parser.parse_args()
    chosen = args.patches.split(",")
    if not set(chosen) <= {"oracle", *PATCHES}:
        parser.error(f"unknown entry in --patches {args.patches!r}")
    _, model = common.setup(args)
    images = striped_renders(args.images)
    detector = get_detector("toyworld-classifier")
    runs: list[dict] = []
    if "oracle" in chosen:
        runs.append(oracle_run(images, detector, args.images))
        write_result("purify_toyworld", runs, out_dir=args.out)
    for label, overrides in (PATCHES[name] for name in chosen if name != "oracle"):
        run = {"method": "abo" if overrides is not None else "base", "case": f"purify {label}",
               "model": model.source, "n_images": args.images, "noise_seed": 0, "metrics": {}}  # api.purify's seed
        patch = None
        if overrides is not None:
            patch, seconds, resolved = erase_timed(model, "abo", CASES["striped"]["request"], overrides)
            run.update(concepts=["striped"], anchors=["solid"], config=dataclasses.asdict(resolved.config))
            run["metrics"]["seconds"] = round(seconds, 1)
            patching.apply(model, patch)
        for noise in ("inversion", "random"):
            for strength in STRENGTHS:
                for prompt, guidance in CONDITIONS:
                    key = f"{noise} s{strength:g} [{prompt or '∅'},cfg{guidance:g}]"
                    run["metrics"].update(purification_metrics(
                        model, images, detector, key, prompt=prompt, guidance=guidance, strength=strength,
                        noise=noise))
        if patch is not None:
            patching.remove(model, patch)
        runs.append(run)
        write_result("purify_toyworld", runs, out_dir=args.out)


if __name__ == "__main__":
    main()
