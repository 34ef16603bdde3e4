"""The README's picture of the side-by-side table: the same prompts and seeds drawn by the base
model and by every method's patch from benchmarks/table1_toyworld.py (one row each).

Writes docs/table1_grid.png: per case, the first columns are target prompts, the last ones
prompts of other concepts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from erasekit import api
from erasekit.core import patch as patching
from erasekit.eval.suites import resolve_suite

CASES = {"circle": "toyworld:shape=circle", "striped": "toyworld:pattern=striped"}
LABEL_WIDTH = 56


def prompts_for(case: str, n_target: int, n_other: int) -> list[str]:
    suite = resolve_suite(CASES[case])
    target = [p.prompt for p in suite.groups["implicit" if case == "striped" else "target"]]
    other = [p.prompt for p in suite.groups["other"]]
    return target[:: max(1, len(target) // n_target)][:n_target] + other[:: max(1, len(other) // n_other)][:n_other]


def labelled_row(images: torch.Tensor, label: str, scale: int) -> Image.Image:
    row = api.image_grid(images, columns=len(images))
    row = row.resize((row.width * scale, row.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (row.width + LABEL_WIDTH, row.height), "white")
    canvas.paste(row, (LABEL_WIDTH, 0))
    ImageDraw.Draw(canvas).text((4, row.height // 2 - 6), label, fill="black")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patches", default=".cache/erasekit/table1-patches")
    parser.add_argument("--methods", default="abo,ca,esd-x,esd-u,sdd,uce,fmn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/table1_grid.png")
    args = parser.parse_args()
    model = api.load_model("toyworld", device="cpu")
    rows = []
    for case in CASES:
        prompts = prompts_for(case, 4, 3)
        rows.append(labelled_row(api.generate(model, prompts, [args.seed], steps=35, progress=False)[0],
                                 f"base {case}", 2))
        for label in args.methods.split(","):
            path = Path(args.patches) / f"{label}-{case}.safetensors"
            if not path.exists():
                continue
            patch = patching.Patch.load(path)
            patching.apply(model, patch)
            images = api.generate(model, prompts, [args.seed], steps=35, progress=False)[0]
            patching.remove(model, patch)
            rows.append(labelled_row(images, label, 2))
    grid = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        grid.paste(row, (0, y))
        y += row.height
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
