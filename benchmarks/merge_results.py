"""Join result files of one benchmark whose parts ran in separate processes (e.g. in parallel).

The runs are concatenated in the order given; each part's command, commit, device and time stay
in the merged file under `parts`. `--reuse FILE CASES` takes only the runs of the given cases from
an earlier result file (itself possibly merged: each run keeps the part it came from), for parts
whose code has not changed since and that need not run again; a reused run that one of the files
measures anew (same method, model, case and switches) is left out.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shlex
from pathlib import Path

from erasekit.eval.results import without_out_option, write_result

# Where results go, wherever the script is started from (the repo root or benchmarks/).
RESULTS = Path(__file__).resolve().parent / "results"


def split_parts(doc: dict) -> list[dict]:
    """A result file as its parts, each with its own runs (a file that was not merged is one part)."""
    if "parts" not in doc:
        command = " && ".join(" ".join(shlex.quote(a) for a in without_out_option(shlex.split(c)))
                              for c in doc["command"].split(" && "))  # a file several resumed runs wrote
        return [{k: doc[k] for k in ("git", "device", *PART_KEYS, *PER_PART_KEYS, "created") if k in doc}
                | {"command": command, "runs": doc["runs"]}]
    if sum(p["runs"] for p in doc["parts"]) != len(doc["runs"]):
        raise SystemExit(f"{doc['benchmark']}: its parts do not add up to its {len(doc['runs'])} runs")
    parts, start = [], 0
    for part in doc["parts"]:
        parts.append({k: doc[k] for k in PER_PART_KEYS if k in doc} | part
                     | {"runs": doc["runs"][start : start + part["runs"]]})
        start += part["runs"]
    return parts


def select_cases(part: dict, patterns: list[str]) -> dict:
    """The part's runs whose case matches a pattern; a pattern LABEL:CASE also matches the run's label
    (e.g. 'abo:*' keeps every case of abo)."""
    def matches(run: dict, pattern: str) -> bool:
        subject = f"{run.get('label', run.get('method', ''))}:{run.get('case', '')}" if ":" in pattern \
            else run.get("case", "")
        return fnmatch.fnmatchcase(subject, pattern)

    runs = [r for r in part["runs"] if any(matches(r, p) for p in patterns)]
    return part | {"runs": runs, "reused_cases": sorted({r.get("case", "") for r in runs})}


IDENTITY_KEYS = ("label", "method", "model", "case", "robust", "loop", "attack", "budget")


def identity(run: dict) -> str:
    """What a run measures (its method, model, case and switches), whatever its numbers."""
    return json.dumps({k: run.get(k) for k in IDENTITY_KEYS}, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="result JSON files of the same benchmark")
    parser.add_argument("--reuse", nargs=2, action="append", default=[], metavar=("FILE", "CASES"),
                        help="an earlier result file and the comma-separated cases (glob patterns; LABEL:CASE "
                        "to match the method label too) to take from it (repeatable)")
    parser.add_argument("--name", default=None,
                        help="the benchmark the parts belong to (parts may be named <name>_<part>, as written with "
                        "a script's --name); default: the one name the files share")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    docs = [json.loads(f.read_text()) for f in args.files]
    reused = [(json.loads(Path(f).read_text()), cases.split(",")) for f, cases in args.reuse]
    names = {d["benchmark"] for d in docs} | {d["benchmark"] for d, _ in reused}
    if args.name:
        strays = sorted(n for n in names if n != args.name and not n.startswith(args.name + "_"))
        if strays:
            parser.error(f"{strays} are not parts of {args.name}")
        names = {args.name}
    if len(names) != 1:
        parser.error(f"give result files of one benchmark, got {sorted(names) or 'none'}")
    parts = [p for d in docs for p in split_parts(d)]
    # a run measured anew replaces the reused run it re-measures (same identity)
    fresh = {identity(r) for p in parts for r in p["runs"]}
    for d, cases in reused:
        for q in split_parts(d):
            kept = select_cases(q, cases)
            kept["runs"] = [r for r in kept["runs"] if identity(r) not in fresh]
            if kept["runs"]:
                parts.append(kept)
    runs = [r for p in parts for r in p["runs"]]
    parts = [p | {"runs": len(p["runs"])} for p in parts]
    # The command that reproduces the merged file: its parts' commands (the files merged are local paths).
    command = " && ".join(p["command"] for p in parts) + " (parts merged by benchmarks/merge_results.py)"
    name = names.pop()
    # What the parts recorded about the protocol (they must agree), and the benchmark's own views of the runs.
    # The newest source's description wins (its runs were made under the current protocol).
    sources = sorted([*docs, *(d for d, _ in reused)], key=lambda d: d.get("created", ""))
    extra = {k: v for d in sources for k, v in d.items() if k in PROTOCOL_KEYS}
    for key in PROTOCOL_KEYS:
        values = {json.dumps(d[key], sort_keys=True) for d in sources if key in d}
        if len(values) > 1 and key not in PER_PART_KEYS:
            parser.error(f"the parts disagree on {key!r}")
    # A part keeps its own description of the protocol only where it differs from the file's, so a reader
    # sees what each part ran under.
    parts = [{k: v for k, v in p.items() if k not in PER_PART_KEYS or v != extra.get(k)} for p in parts]
    module = _script(name)
    views = getattr(module, "tables", None)
    if views is not None and "evaluation_seeds" in extra:
        extra["tables"] = views(runs, extra["evaluation_seeds"])
    chosen_of = getattr(module, "chosen_of", None)  # a calibration's choice, recomputed over every part's runs
    chosen = chosen_of(runs) if chosen_of is not None else None
    if chosen is not None:
        extra["chosen"] = chosen
    print(write_result(name, runs, out_dir=args.out, extra={**extra, "parts": parts, "command": command}))


# What a part measured about its machine, kept with the part (e.g. families_cost's matmul throughput).
PART_KEYS = ("matmul_gflops",)
PROTOCOL_KEYS = ("calibration_seeds", "evaluation_seeds", "tuned", "compare_to")
# Protocol keys that describe rather than define the runs: parts may differ on them, each keeping its own.
PER_PART_KEYS = ("tuned",)


# Result files written by a script of another name.
WRITTEN_BY = {"calibration_joint_toyworld": "perf_concepts"}


def _script(benchmark: str):
    """benchmarks/<script>.py that writes `benchmark` (a result named for another model, e.g. table1_toyworld-v,
    by the script before its '-'; a script's second result, e.g. perf_concepts_quality, by the script before
    its last '_'; else WRITTEN_BY), imported, or None. Its `tables(runs, seed_sets)` and `chosen_of(runs)` are
    what a merged file recomputes."""
    import importlib.util
    import sys

    names = [benchmark, benchmark.split("-")[0], benchmark.rsplit("_", 1)[0], WRITTEN_BY.get(benchmark, "")]
    path = next((p for p in (Path(__file__).parent / f"{n}.py" for n in names if n) if p.exists()), None)
    if path is None:
        return None
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(benchmark, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
