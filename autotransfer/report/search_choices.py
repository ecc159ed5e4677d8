"""What ``auto`` chose for a run (backbones, input sizes) and why, in one line of plain text: the same
words in the terminal summary (cli.py) and the HTML report (report/outputs.py)."""

from __future__ import annotations


def describe_auto(auto: dict, probed: list[tuple[str, int]]) -> str:
    """The backbones and sizes ``auto`` resolved to, why these sizes, which (backbone, size) pairs the
    budget let the probes reach when fewer than planned, and which backbones were left out and why.

    ``auto``: profile.json's ``auto`` (search/auto_space.py's ``AutoChoice.to_json``); ``probed``: the
    (backbone, resolution in px) of every probe that completed, in any order, repeats allowed.
    """
    pairs = list(dict.fromkeys(f"{backbone}@{int(size)}" for backbone, size in probed))
    why_sizes = auto.get("resolutions_reason") or f"images' median shorter side {auto['native_side']} px"
    planned = len(auto["backbones"]) * len(auto["resolutions"])
    reached = f"; probed within the budget: {', '.join(pairs) or 'none'}" if len(pairs) < planned else ""
    sizes = sorted({int(pair.rsplit("@", 1)[1]) for pair in pairs})
    if len(sizes) == 1 and len(auto["resolutions"]) > 1:  # the summary must not promise a comparison
        reached += (f" (only {sizes[0]} px: whether another size helps was not measured; a larger "
                    "--time-budget probes both)")  # fmt: skip
    skipped = "; ".join(f"{name}: {why}" for name, why in (auto.get("skipped") or {}).items())
    return (
        f"backbones {', '.join(auto['backbones'])} at {', '.join(map(str, auto['resolutions']))} px "
        f"({why_sizes}){reached}" + (f"; left out: {skipped}" if skipped else "")
    )
