"""The HTML pages (the run report and the bench page) from the jinja2 templates and the one style sheet
shipped in ``autotransfer/report/templates/``. Autoescaping is on: every value is escaped unless it is
markup this package made (the plots' SVG, the bench's pandas table), passed as ``Markup``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from markupsafe import Markup

from autotransfer.report.terminal import cell_text, is_missing


def percent(value) -> str:
    """A share as "83.3%"; a missing value as "—"."""
    return "—" if is_missing(value) else f"{float(value):.1%}"


def bar_width(value) -> str:
    """The width (percent of the bar) a share fills, clipped to 0..100."""
    width = 0 if is_missing(value) else max(0.0, min(1.0, float(value))) * 100
    return f"{width:.0f}"


def cell(value) -> str:
    """A table cell's text (numbers to 4 significant digits, missing values empty)."""
    return cell_text(value, 4)


@cache
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(
        loader=PackageLoader("autotransfer.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,  # a misspelt field fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(percent=percent, bar_width=bar_width, cell=cell)
    return environment


def style_sheet() -> Markup:
    """The pages' one style sheet (inlined: each page is a single file)."""
    return Markup(files("autotransfer.report").joinpath("templates", "report.css").read_text(encoding="utf-8"))


def render(template: str, **context) -> str:
    """``template`` (a file of ``templates/``) rendered with ``context`` and the style sheet."""
    return _environment().get_template(template).render(css=style_sheet(), **context)
