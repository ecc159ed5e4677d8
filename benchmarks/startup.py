"""Start-up time of the `autotransfer` command: wall time before anything is done, and what it imports.

    python -m benchmarks.startup                                  # this checkout
    python -m benchmarks.startup --source before=/path/to/old/src --source after=.

Each source is a folder holding the `autotransfer` package; it is put first on PYTHONPATH, so one
virtual environment times several versions of the code. Per command: the median wall and CPU time of
``--repeats`` runs after one warm-up run (which also fills `zoo list`'s description cache), and for
the import of ``autotransfer.cli`` the cumulative time `python -X importtime` reports and whether
torch was imported.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autotransfer.machine import describe_machine

NEUTRAL = tempfile.gettempdir()  # the working directory: `python -m` puts it first on sys.path, before PYTHONPATH
DATA = Path(NEUTRAL) / "autotransfer-startup-data"  # two class folders; fit's argument errors come before reading
EMPTY = Path(NEUTRAL) / "autotransfer-startup-empty"  # an existing folder that is no checkpoint
COMMANDS = {
    "autotransfer --help": ["--help"],
    "autotransfer zoo list": ["zoo", "list"],
    "autotransfer predict missing-dir x": ["predict", "missing-dir", "x"],
    # argument errors (issue 26): each is answered before torch is imported
    "autotransfer fit DATA --metric nosuch": ["fit", str(DATA), "--metric", "nosuch"],
    "autotransfer fit DATA --storage postgresql//bad": ["fit", str(DATA), "--storage", "postgresql//bad"],
    "autotransfer fit DATA --profile-backbone nosuchnet": ["fit", str(DATA), "--profile-backbone", "nosuchnet"],
    "autotransfer export EMPTY --format bad --out m": ["export", str(EMPTY), "--format", "bad", "--out", "m"],
    # the fresh-user trial's slow ones (issue 26 leftovers)
    "autotransfer fit DATA --search-space nosuch": ["fit", str(DATA), "--search-space", "nosuch"],
    "autotransfer fit DATA --device tpu": ["fit", str(DATA), "--device", "tpu"],
    "autotransfer fit DATA --storage sqlite:////proc/s.db": ["fit", str(DATA), "--storage", "sqlite:////proc/s.db"],
    "autotransfer predict EMPTY x --size bad": ["predict", str(EMPTY), "x", "--size", "bad"],
    "autotransfer zoo show nosuchnet": ["zoo", "show", "nosuchnet"],
    # the fourth fresh-user trial's (issue 26): 4.9 s to refuse a missing --weights
    "autotransfer zoo show mobilenetv2_100 --weights MISSING": [
        "zoo",
        "show",
        "mobilenetv2_100",
        "--weights",
        str(DATA / "missing.safetensors"),
    ],
    "autotransfer inspect DATA --size 0": ["inspect", str(DATA), "--size", "0"],
}
REPO = Path(__file__).resolve().parents[1]
IMPORT_PROBE = "import autotransfer.cli, sys; print('torch' in sys.modules)"


def _env(source: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}


def timed(source: Path, args: list[str], repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``python -m autotransfer.cli ARGS`` (its exit code is not looked at).
    CPU time (user + system of the child) is what a busy shared machine distorts least."""
    command = [sys.executable, "-m", "autotransfer.cli", *args]
    subprocess.run(command, env=_env(source), cwd=NEUTRAL, capture_output=True)  # warm-up: file and zoo-list caches
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        tic = time.perf_counter()
        subprocess.run(command, env=_env(source), cwd=NEUTRAL, capture_output=True)
        walls.append(time.perf_counter() - tic)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def cli_import(source: Path) -> tuple[float, bool]:
    """(seconds `python -X importtime` gives for importing autotransfer.cli, whether torch was imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORT_PROBE], env=_env(source),
                          cwd=NEUTRAL, capture_output=True, text=True)  # fmt: skip
    line = next(line for line in reversed(done.stderr.splitlines()) if line.rstrip().endswith("autotransfer.cli"))
    return int(line.split("|")[1]) / 1e6, done.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", default=[], help="LABEL=FOLDER holding the autotransfer package")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sources = [item.split("=", 1) for item in args.source] or [["this checkout", str(REPO)]]
    print(describe_machine())
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    print(f"\nmedian of {args.repeats} runs after a warm-up: wall seconds / CPU seconds\n")
    for folder in (DATA / "a", DATA / "b", EMPTY):
        folder.mkdir(parents=True, exist_ok=True)
    print("| command | " + " | ".join(label for label, _ in sources) + " |")
    print("|---|" + "---|" * len(sources))
    for name, command in COMMANDS.items():
        cells = [timed(Path(folder).resolve(), command, args.repeats) for _, folder in sources]
        print(f"| `{name}` | " + " | ".join(f"{wall:.2f} / {cpu:.2f}" for wall, cpu in cells) + " |")
    imports = [cli_import(Path(folder).resolve()) for _, folder in sources]
    print("| `import autotransfer.cli` (-X importtime, s) | " + " | ".join(f"{s:.2f}" for s, _ in imports) + " |")
    print("| torch imported by `import autotransfer.cli` | " + " | ".join("yes" if t else "no" for _, t in imports)
          + " |")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
