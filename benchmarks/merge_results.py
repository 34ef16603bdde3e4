"""Join result files of one benchmark whose parts ran in separate processes (e.g. in parallel).

The runs are concatenated in the order given; each part's command, commit, device and time stay
in the merged file under `parts`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from erasekit.eval.results import without_out_option, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="result JSON files of the same benchmark")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    docs = [json.loads(f.read_text()) for f in args.files]
    names = {d["benchmark"] for d in docs}
    if len(names) != 1:
        parser.error(f"files of different benchmarks: {sorted(names)}")
    parts = [{k: d[k] for k in ("git", "device", "created")} | {"runs": len(d["runs"]), "command": " ".join(
        shlex.quote(a) for a in without_out_option(shlex.split(d["command"])))} for d in docs]
    runs = [r for d in docs for r in d["runs"]]
    # The command that reproduces the merged file: its parts' commands (the files merged are local paths).
    command = " && ".join(p["command"] for p in parts) + " (parts merged by benchmarks/merge_results.py)"
    print(write_result(names.pop(), runs, out_dir=args.out, extra={"parts": parts, "command": command}))


if __name__ == "__main__":
    main()
