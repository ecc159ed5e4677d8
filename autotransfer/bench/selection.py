"""The part of a suite a `bench` run asks for: some of its contenders and seeds, checked against it."""

from __future__ import annotations

from dataclasses import replace

from autotransfer.bench.suite import Suite
from autotransfer.errors import AutoTransferError


def select(suite: Suite, *, contenders: str | None, seeds: str | None) -> tuple[Suite, tuple[str, ...] | None]:
    """``suite`` with only the comma-separated ``seeds`` asked for, and the ``contenders`` asked for
    (None: all of them); AutoTransferError naming the option for a name or seed the suite lacks."""
    only = None
    if contenders:
        only = tuple(c.strip() for c in contenders.split(",") if c.strip())
        unknown = [c for c in only if c not in suite.contenders]
        if unknown:
            raise AutoTransferError(
                f"{{option}}: {', '.join(unknown)} not in suite {suite.name}.",
                where=f"{{option:{contenders}}}",
                fix=f"choose from {', '.join(suite.contenders)}.",
                option="contenders",
            )
    if seeds:
        try:
            chosen = tuple(int(seed) for seed in seeds.split(",") if seed.strip())
        except ValueError:
            chosen = ()
        if not chosen or any(seed not in suite.seeds for seed in chosen):
            raise AutoTransferError(
                f"{{option}} {seeds!r}: expected some of suite {suite.name}'s seeds.",
                where=f"{{option:{seeds}}}",
                fix=f"choose from {', '.join(map(str, suite.seeds))}, comma-separated.",
                option="seeds",
            )
        suite = replace(suite, seeds=chosen)
    return suite, only
