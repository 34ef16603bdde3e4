"""How fast the CLI answers what needs no model: wall seconds (median of --repeat runs) of
`erasekit ls methods`, `erasekit ls families`, `erasekit --help` and a rejected empty concept, each
in a fresh interpreter, beside `python -c "import torch"` measured in the same run (what every
command cost before the heavy imports were deferred). The machine's load average is recorded with
the times, since other work on the machine slows every row alike.

Writes benchmarks/results/perf_cli.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from erasekit.eval.results import write_result

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-m", "erasekit"]
COMMANDS = {
    "ls methods": [*CLI, "ls", "methods"],
    "ls families": [*CLI, "ls", "families"],
    "--help": [*CLI, "--help"],
    "erase with an empty concept (rejected)": [*CLI, "erase", "--method", "abo", "--concept", "", "--out",
                                               "p.safetensors"],
    'python -c "import torch" (reference)': [sys.executable, "-c", "import torch"],
}


def wall(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    runs = []
    for label, command in COMMANDS.items():
        wall(command)  # warm the file cache once
        times, codes = zip(*(wall(command) for _ in range(args.repeat)), strict=True)
        metrics = {"seconds_median": round(statistics.median(times), 3), "seconds_max": round(max(times), 3),
                   "exit_code": codes[0], "repeats": args.repeat}
        runs.append({"command": label, "argv": command[1:], "metrics": metrics})
        print(label, metrics, flush=True)
    write_result("perf_cli", runs, out_dir=args.out, extra={"load_average": [round(x, 2) for x in os.getloadavg()]})


if __name__ == "__main__":
    main()
