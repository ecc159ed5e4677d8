"""`autotransfer cache`: what the cache holds, and clearing it."""

from __future__ import annotations

import json
import time

import typer
from rich.markup import escape
from rich.table import Table

from autotransfer.cli.common import HELP_OPTIONS, out

cache_app = typer.Typer(
    context_settings=HELP_OPTIONS,
    help="What the cache holds (decoded images and features per dataset folder and size) and clearing it.",
)


@cache_app.callback(invoke_without_command=True)
def _cache_default(
    context: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="`cache --json`: as `cache list --json`"),
) -> None:
    """`autotransfer cache` alone lists, as `cache list` does."""
    if context.invoked_subcommand is None:
        cache_list(as_json=as_json)


@cache_app.command("list")
def cache_list(as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table")) -> None:
    """List the cache: per dataset folder and size, its decoded images and features, their size and
    last use (least recent first; entries whose folder was not recorded in one row at the end), and what
    is never evicted (weights, downloaded wheels). --json lists every entry.

    With AUTOTRANSFER_CACHE_LIMIT (e.g. 50GB) set, `fit` evicts the least recently used entries beyond
    it; an entry a running process uses is never removed."""
    from dataclasses import asdict

    from autotransfer.data.cache_index import cache_limit, format_bytes, list_cache
    from autotransfer.data.cache_rows import cache_rows

    listing = list_cache()
    if as_json:
        rows = [asdict(e) | {"bytes": e.bytes} for e in listing.entries]
        print(json.dumps({"root": str(listing.root), "entries": rows, "never_evicted": listing.other}, indent=2))
        return
    table = Table(title=f"autotransfer cache at {escape(str(listing.root))}")
    for column in ("dataset folder", "size", "images", "decoded", "features", "last use", "in use"):
        table.add_column(
            column, overflow="fold", justify="right" if column in ("images", "decoded", "features") else "left"
        )
    for row in cache_rows(listing.entries):  # a folder's versions in one row, unrecorded folders in one row
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.last_used)) if row.last_used else "?"
        table.add_row(escape(row.label), row.recipe or "various", str(row.images), format_bytes(row.decoded_bytes),
                      format_bytes(row.feature_bytes), used, "yes" if row.in_use else "")  # fmt: skip
    out.print(table if listing.entries else "No decoded images or features are cached.")
    limit = cache_limit()
    out.print(
        f"decoded images and features: {format_bytes(listing.evictable_bytes)}"
        + (f" (limit {format_bytes(limit)}, AUTOTRANSFER_CACHE_LIMIT)" if limit else " (no limit set)")
        + "; never evicted: "
        + (", ".join(f"{escape(name)} {format_bytes(size)}" for name, size in listing.other.items()) or "nothing")
    )


@cache_app.command("clear")
def cache_clear(
    older_than: str | None = typer.Option(
        None, "--older-than", metavar="AGE", help="only entries last used longer ago, e.g. 30d, 12h, 2w"
    ),
) -> None:
    """Remove cached decoded images and features (all, or those unused for --older-than). Entries in use
    by a running process are kept; weights are never removed here."""
    from autotransfer.data.cache_index import clear, format_bytes, parse_age

    removal = clear(older_than=parse_age(older_than) if older_than else None)
    out.print(f"removed {len(removal.removed)} entr{'y' if len(removal.removed) == 1 else 'ies'}, "
              f"freed {format_bytes(removal.freed)}")  # fmt: skip
    if removal.kept_in_use:
        out.print(f"kept {len(removal.kept_in_use)} in use by a running process: "
                  + ", ".join(escape(e.dataset or e.name) for e in removal.kept_in_use[:5]))  # fmt: skip
