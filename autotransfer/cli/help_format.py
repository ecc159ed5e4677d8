"""Two adjustments of typer's rich --help, kept here, apart from the commands.

Why not a supported setting: typer 0.29 has none for either. ``rich_markup_mode="markdown"`` would
reflow paragraphs, but it also renders the `backquoted` command names and ``*``/``_`` in option help
as Markdown, which changes the help texts; ``metavar=""`` hides a flag's type but not that of
typer's own ``-h/--help`` option.
"""

from __future__ import annotations

import inspect

import typer


def show_flags_without_type(core=typer.core) -> None:
    """typer (0.29) prints ``<bool>`` after every on/off flag in --help, as if it took a value:
    show flags (``--json``, ``--resume/--no-resume``, ``-h``) without a type column entry. Replaces
    ``TyperOption.display_type_rich`` once (idempotent); a typer without it is left as it is."""
    option = getattr(core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if original is None or getattr(original, "_flags_plain", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else original(self, ctx)

    display_type_rich._flags_plain = True
    option.display_type_rich = display_type_rich


def reflow_help(*typer_apps: typer.Typer) -> None:
    """typer's rich help keeps a docstring's line breaks and then wraps the lines again, so a paragraph
    breaks mid-phrase at any terminal width: each command's paragraphs (our own docstrings; typer is
    not touched) are joined into one line first."""
    for typer_app in typer_apps:
        callbacks = [command.callback for command in typer_app.registered_commands]
        if typer_app.registered_callback is not None:
            callbacks.append(typer_app.registered_callback.callback)
        for callback in filter(None, callbacks):
            paragraphs = inspect.cleandoc(callback.__doc__ or "").split("\n\n")
            callback.__doc__ = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)
