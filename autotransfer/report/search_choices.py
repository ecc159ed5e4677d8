"""What ``auto`` chose for a run (backbones, input sizes) and why, in one line of plain text: the same
words in the terminal summary (cli.py) and the HTML report (report/outputs.py)."""

from __future__ import annotations


def describe_auto(auto: dict, probed: list[tuple[str, int]]) -> str:
    """The backbones and sizes ``auto`` resolved to, why these sizes, which (backbone, size) pairs the
    budget let the probes reach when fewer than planned, and which backbones were left out and why (one
    probed after all, in the time the search left, is named as such, not as left out).

    ``auto``: profile.json's ``auto`` (search/auto_space.py's ``AutoChoice.to_json``); ``probed``: the
    (backbone, resolution in px) of every probe that completed, in any order, repeats allowed.
    """
    chosen = [int(size) for size in auto["resolutions"]]
    pairs = list(dict.fromkeys(f"{backbone}@{int(size)}" for backbone, size in probed if int(size) in chosen))
    # a size `auto` did not choose, probed with the time the search left (search/widen.py)
    later_sizes = sorted({int(size) for _, size in probed} - set(chosen))
    why_sizes = auto.get("resolutions_reason") or f"images' median shorter side {auto['native_side']} px"
    planned = len(auto["backbones"]) * len(auto["resolutions"])
    reached = f"; probed within the budget: {', '.join(pairs) or 'none'}" if len(pairs) < planned else ""
    sizes = sorted({int(pair.rsplit("@", 1)[1]) for pair in pairs})
    if len(sizes) == 1 and len(auto["resolutions"]) > 1:  # the summary must not promise a comparison
        reached += (f" (only {sizes[0]} px: whether another size helps was not measured; a larger "
                    "--time-budget probes both)")  # fmt: skip
    # a backbone left out at first and probed with the time the search left (search/widen.py)
    probed_names = {backbone for backbone, _ in probed}
    left_out = {name: why for name, why in (auto.get("skipped") or {}).items() if name not in probed_names}
    later = [name for name in auto.get("skipped") or {} if name in probed_names]
    skipped = reasons_once(left_out)
    return (
        f"backbones {', '.join(auto['backbones'])} at {', '.join(map(str, auto['resolutions']))} px "
        f"({why_sizes}){reached}"
        + (f"; left out at first, probed in the time left: {', '.join(later)}" if later else "")
        + (f"; other sizes probed in the time left: {', '.join(map(str, later_sizes))} px" if later_sizes else "")
        + (f"; left out: {skipped}" if skipped else "")
    )


def reasons_once(reasons: dict[str, str]) -> str:
    """ "a, b: why; c: another reason": names that share a reason listed before it, the reason said once (a
    short budget leaves every backbone out for the same long sentence)."""
    names_by_reason: dict[str, list[str]] = {}
    for name, why in reasons.items():
        names_by_reason.setdefault(why, []).append(name)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in names_by_reason.items())
