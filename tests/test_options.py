"""One option list: ``RunOptions`` (autotransfer/options.py). The API's constructor and the CLI's
``fit`` spell its fields out (scikit-learn's ``get_params`` reads the constructor's signature; typer
reads the command's); these tests keep both equal to it, names and defaults."""

import dataclasses
import inspect

import typer

from autotransfer.api import AutoTransfer
from autotransfer.options import DEFAULTS, RunOptions

FIELDS = [f.name for f in dataclasses.fields(RunOptions)]


def test_the_estimators_parameters_are_the_run_options_plus_its_own():
    parameters = inspect.signature(AutoTransfer.__init__).parameters
    names = [name for name in parameters if name != "self"]
    assert names[: len(FIELDS)] == FIELDS
    assert names[len(FIELDS) :] == ["sampler", "pruner", "verbose"]  # Python objects and printing: not options
    assert {name: parameters[name].default for name in FIELDS} == dataclasses.asdict(DEFAULTS)
    assert set(AutoTransfer().get_params()) == {*FIELDS, "sampler", "pruner", "verbose"}


def test_the_fit_commands_options_are_the_run_options_plus_its_own():
    from autotransfer.cli import app

    fit = typer.main.get_command(app).commands["fit"]
    options = {p.opts[0].removeprefix("--").replace("-", "_"): p for p in fit.params if p.opts[0].startswith("--")}
    assert set(options) - {"resume", "quiet"} == set(FIELDS)
    for name in FIELDS:
        default = getattr(DEFAULTS, name)
        assert options[name].default == (str(default) if name in ("time_budget", "search_space") else default), name
