"""What a LoRA export of an erasure costs in erasure and preservation, against the patch itself.

Erase circle → square with All-but-One (the toy world's defaults: erasekit/toyworld/defaults.py; the patch
of an identical earlier run is reused), export it with `--energy` (default 0.99) and at full rank, and
evaluate the truncated LoRA (as the patch ΔW = B·A it amounts to) and the patch itself with the same
suite and seeds; the full-rank export is exact, so its largest relative error and its size are recorded.
Nothing is chosen here: the energy is the one the issue names, fixed before any run.
Writes benchmarks/results/lora_toyworld.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import common

from erasekit.core.lora import LORA_FILE, RankChoice, export_lora, lora_patch
from erasekit.eval.results import write_result


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--energy", type=float, default=0.99)
    args = p.parse_args()
    seed_sets, model = common.setup(args)
    case = next(c for c in common.concept_cases("next") if c["case"] == "circle")
    patch, seconds, resolved = common.erase_timed(model, "abo", common.case_request(case), {})
    label = {"method": "abo", "case": "circle", "concepts": [case["concept"]], "anchors": [case["anchor"]]}
    runs = [common.evaluation_run(model, [patch], case["suite"], seeds, args.steps,
                                  {**label, "export": "patch", "seed_set": i},
                                  {"values": patch.num_values()}) for i, seeds in enumerate(seed_sets)]
    energy_name = f"lora-energy-{args.energy:g}"
    exports = {}
    for name, choice in (("lora-full", RankChoice()), (energy_name, RankChoice(energy=args.energy))):
        with tempfile.TemporaryDirectory() as tmp:
            from safetensors.torch import load_file

            out = export_lora(model, patch, Path(tmp) / "lora", choice)
            tensors = load_file(str(out / LORA_FILE))
            exports[name] = (tensors, (out / LORA_FILE).stat().st_size)
    # The full-rank LoRA is exact (its error is recorded); only the truncated one needs an evaluation.
    tensors, size = exports[energy_name]
    for i, seeds in enumerate(seed_sets):
        runs.append(common.evaluation_run(
            model, [lora_patch(tensors, patch)], case["suite"], seeds, args.steps,
            {**label, "export": energy_name, "seed_set": i, "rank_choice": {"energy": args.energy}},
            {"values": sum(t.numel() for t in tensors.values()), "bytes": size, **export_report(tensors, patch)}))
    full_tensors, full_size = exports["lora-full"]
    by = {(r["export"], r["seed_set"]): r["metrics"] for r in runs}
    energy = energy_name
    metrics = {"full_rank_relative_error_max": export_report(full_tensors, patch)["relative_error_max"],
               "full_rank_bytes": full_size}
    for i in range(len(seed_sets)):
        for key in ("target_rate", "ssim_other"):
            metrics[f"{key}_difference_{i}"] = by[(energy, i)][key] - by[("patch", i)][key]
    metrics["values_ratio"] = by[(energy, 0)]["values"] / by[("patch", 0)]["values"]
    metrics["bytes_ratio_energy_vs_full"] = by[(energy, 0)]["bytes"] / full_size
    write_result(common.result_name("lora", args.model), runs, metrics, out_dir=args.out,
                 extra={**common.protocol({}), "evaluation_seeds": seed_sets, "erase_seconds": round(seconds, 1)})

def export_report(tensors, patch) -> dict:
    """Mean and largest rank of the exported pairs, and the largest relative Frobenius error against ΔW."""
    import torch

    ranks = [t.shape[0] for k, t in tensors.items() if k.endswith(".lora_A.weight")]
    rebuilt = lora_patch(tensors, patch)
    errors = [float(torch.linalg.norm(rebuilt.deltas[k] - d) / torch.linalg.norm(d).clamp_min(1e-30))
              for k, d in patch.deltas.items() if k.endswith(".weight")]
    return {"rank_mean": sum(ranks) / len(ranks), "rank_max": max(ranks), "relative_error_max": max(errors)}


if __name__ == "__main__":
    main()
