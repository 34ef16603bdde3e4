"""How long `make demo`'s main job takes, end to end, as a new user runs it: `erasekit demo` in a fresh
interpreter (imports, model load, the All-but-One erase, the evaluation, the report), wall seconds per
run and the evaluation's sample counts (the bar: ≤ 3 minutes with n_target ≥ 60 on the 2-core CPU).
The machine's load average before and after is recorded: a second job on the machine slows the demo,
so a number measured beside one says so. The setup step of `make demo` (creating .venv) is not timed:
it runs once per machine.

Writes benchmarks/results/perf_demo.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from erasekit.eval.results import write_result

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            load_before = [round(x, 2) for x in os.getloadavg()]
            start = time.perf_counter()
            # run in an empty directory: its .cache starts empty, as on a new machine, so the demo draws
            # every base image itself; the erasekit timed is this checkout's (the one the result's git hash
            # names), whatever the interpreter has installed
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            done = subprocess.run([sys.executable, "-m", "erasekit", "demo", "--out", str(Path(tmp) / "demo")],
                                  capture_output=True, text=True, cwd=tmp, env=env)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"erasekit demo failed ({done.returncode}): {done.stderr[-2000:]}")
            result = json.loads((Path(tmp) / "demo" / "eval" / "results.json").read_text())
        metrics = {"seconds": round(seconds, 1),
                   **{k: v for k, v in result["metrics"].items() if k.startswith("n_") or k in
                      ("target_rate", "ssim_other", "other_accuracy")}}
        runs.append({"run": i, "metrics": metrics, "load_average_before": load_before,
                     "load_average_after": [round(x, 2) for x in os.getloadavg()]})
        print(runs[-1], flush=True)
    write_result("perf_demo", runs, out_dir=args.out)


if __name__ == "__main__":
    main()
