"""The command line's surface: -h everywhere, --version, flags shown as flags, a light start-up
(no torch/timm/pandas/numpy/optuna imported for --help), and the README's synopsis naming exactly
the options each command's --help shows."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from autotransfer import __version__
from autotransfer.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
HEAVY = ("torch", "timm", "torchvision", "pandas", "numpy", "optuna", "sklearn", "matplotlib")


def commands(command=None, prefix=()):
    """(name, click command) of every leaf command: ``("fit",)``, ``("zoo", "list")``..."""
    command = command or typer.main.get_command(app)
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from commands(sub, (*prefix, name))
    else:
        yield prefix, command


def option_names(command) -> set[str]:
    names = set()
    for param in command.params:
        if param.param_type_name == "option" and "--help" not in param.opts:
            names |= {o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
    return names


def readme_synopsis() -> dict[tuple[str, ...], str]:
    block = README.read_text().split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    entries: dict[tuple[str, ...], str] = {}
    current = None
    for line in block.splitlines():
        text = line.split("#", 1)[0]
        if text.startswith(".venv/bin/autotransfer "):
            words = text.split()[1:]
            name = tuple(words[:2]) if words[0] in ("zoo", "cache") else (words[0],)
            current = name
            entries[current] = entries.get(current, "") + " " + text
        elif text.startswith(" ") and current:
            entries[current] += " " + text
    return entries


def test_readme_synopsis_matches_every_commands_help():
    synopsis = readme_synopsis()
    runner = CliRunner()
    for name, command in commands():
        assert name in synopsis, f"README's synopsis lacks `autotransfer {' '.join(name)}`"
        shown = set(re.findall(r"--[a-z][a-z-]*", synopsis[name]))
        help_text = runner.invoke(app, [*name, "--help"], terminal_width=200).output
        for param in command.params:
            if param.param_type_name != "option" or "--help" in param.opts:
                continue
            names = {o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
            assert names & shown, f"README: `{' '.join(name)}` lacks {'/'.join(sorted(names))}"
            assert all(n in help_text for n in names)
        unknown = shown - option_names(command)
        assert not unknown, f"README: `{' '.join(name)}` shows options it does not have: {unknown}"


def test_every_command_takes_h_and_flags_show_no_type():
    runner = CliRunner()
    for name, _ in [((), None), *commands()]:
        result = runner.invoke(app, [*name, "-h"], terminal_width=200)
        assert result.exit_code == 0 and "Usage" in result.output, (name, result.output)
        assert "<bool>" not in result.output, (name, result.output)
    fit_help = runner.invoke(app, ["fit", "-h"], terminal_width=200).output
    assert "--no-resume" in fit_help and "--val-fraction" in fit_help


def test_fit_defaults_are_run_options_defaults():
    from dataclasses import asdict

    from autotransfer.options import DEFAULTS as options

    fit = dict(commands())[("fit",)]
    defaults = {p.name: p.default for p in fit.params}
    for key in ("time_budget", "search_space", "backend", "seed", "val_fraction", "cpus_per_trial", "profile_backbone"):
        assert defaults[key] == asdict(options)[key], key


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["--help"], ["-h"], ["fit", "-h"]])
def test_start_up_imports_nothing_heavy(args):
    code = (
        "import sys\nfrom autotransfer.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', __import__('json').dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    heavy = json.loads(done.stdout.rsplit("HEAVY", 1)[1])
    assert heavy == [], f"`autotransfer {' '.join(args)}` imported {heavy}"
    if args[0] in ("--version", "-V"):
        assert done.stdout.startswith(f"autotransfer {__version__}")


def test_the_package_imports_lazily_and_fully():
    code = (
        "import sys, autotransfer\nassert 'torch' not in sys.modules\n"
        "print(autotransfer.AutoTransfer.__name__, autotransfer.Pipeline.__name__, autotransfer.search.__name__)\n"
        "import timm, torchvision\nprint('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AutoTransfer", "Pipeline", "autotransfer.search", "ok"]


def test_no_commands_help_breaks_a_paragraph_mid_phrase():
    """typer kept the docstrings' own line breaks and wrapped again: `bench -h` broke after "cells at
    chance level are". Every line of a description paragraph but its last is filled to the width."""
    runner = CliRunner()
    for name, _ in [((), None), *commands()]:
        output = runner.invoke(app, [*name, "-h"], terminal_width=100).output
        description = output.split("Usage", 1)[1].split("╭", 1)[0].splitlines()[1:]
        paragraphs = "\n".join(line.strip() for line in description).strip().split("\n\n")
        for paragraph in paragraphs:
            lines = paragraph.splitlines()
            assert all(len(line) > 50 for line in lines[:-1]), (name, lines)
