"""Peak memory of each stage of a whole `autotransfer fit`, and its wall time against the budget (issue 27).

    python -m benchmarks.scale_fit DIR [DIR ...] --time-budget 30m [--out RUNS] [--taskset 1]

Each DIR is fit in a child process (`python -m autotransfer.cli fit DIR --time-budget B --out RUNS/<name>`).
This process samples the child's ``RssAnon`` (the memory only swap could free: what the OOM killer sees)
and ``VmRSS`` from /proc every 0.2 s; each sample belongs to the stage of the last line the run had written
to its ``fit.log`` by then (the logger of each stage: search/probe_stage, finetune_stage, ensemble_stage;
"final pipeline" and "saved" for the final refit and saving; everything before the first probe is
"index, decode, profile"). The table gives the peak per stage, the wall time and the budget left unused.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

GIB = 2**30
STAGES = ("index, decode, profile", "probes", "fine-tuning", "ensemble", "final refit, saving")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ (\S+): (.*)$")


def stage_of(logger: str, message: str, current: str) -> str:
    """The stage a fit.log line starts (or ``current`` when it starts none)."""
    if logger.endswith("probe_stage") and current == STAGES[0]:
        return STAGES[1]
    if logger.endswith("finetune_stage"):
        return STAGES[2]
    if logger.endswith("ensemble_stage"):
        return STAGES[3]
    if message.startswith(("final pipeline", "saved")):
        return STAGES[4]
    return current


def stage_starts(log: Path) -> list[tuple[float, str]]:
    """(epoch seconds, stage) at each change of stage in ``log``."""
    starts, current = [], STAGES[0]
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(match[2]) / 1000
        stage = stage_of(match[3], match[4], current)
        if stage != current or not starts:
            starts.append((stamp, stage))
            current = stage
    return starts


def memory(pid: int) -> tuple[int, int]:
    """(RssAnon, VmRSS) of ``pid`` in bytes; zeros once it has exited."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return 0, 0
    return tuple(int(fields.get(k, "0 kB").split()[0]) * 1024 for k in ("RssAnon", "VmRSS"))


def fit_once(data: Path, budget: str, out: Path, cpu: str | None) -> dict:
    """Run fit on ``data``; the samples by stage, the wall time and the log's unused-budget line."""
    command = [sys.executable, "-m", "autotransfer.cli", "fit", str(data), "--time-budget", budget,
               "--out", str(out), "--quiet"]  # fmt: skip
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    samples, tic = [], time.time()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while child.poll() is None:
        samples.append((time.time(), *memory(child.pid)))
        time.sleep(0.2)
    wall = time.time() - tic
    if child.returncode != 0:
        raise SystemExit(f"fit on {data} failed ({child.returncode}): {child.stderr.read()[-2000:]}")
    starts = stage_starts(out / "fit.log")
    peaks = {stage: [0, 0] for stage in STAGES}
    for stamp, anon, rss in samples:
        stage = next((s for t, s in reversed(starts) if t <= stamp), STAGES[0])
        peaks[stage] = [max(peaks[stage][0], anon), max(peaks[stage][1], rss)]
    unused = re.findall(r"budget: (.*) unused \((\d+)%\)", (out / "fit.log").read_text())
    images = sum(1 for p in data.rglob("*") if p.is_file())
    return {"images": images, "wall": wall, "peaks": peaks, "unused": unused[-1][1] + "%" if unused else "0%"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--time-budget", required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/autotransfer-scale-fit"))
    parser.add_argument("--taskset", help="run the fit pinned to these CPUs (taskset -c)")
    args = parser.parse_args()
    from autotransfer.budget import parse_duration
    from autotransfer.machine import describe_machine

    print(describe_machine())
    budget = parse_duration(args.time_budget)
    print(f"\nBudget {args.time_budget} per fit; peak RssAnon / VmRSS per stage, GiB.\n")
    print("| images | wall s | within budget + 5% | unused | " + " | ".join(STAGES) + " |")
    print("|---:|---:|---|---:|" + "---:|" * len(STAGES))
    for data in args.data:
        r = fit_once(data, args.time_budget, args.out / data.name, args.taskset)
        cells = " | ".join(f"{a / GIB:.2f} / {b / GIB:.2f}" if b else "–" for a, b in r["peaks"].values())
        print(f"| {r['images']:,} | {r['wall']:.0f} | {'yes' if r['wall'] <= 1.05 * budget else 'NO'} "
              f"| {r['unused']} | {cells} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
