"""What the cheap stage adds when the search would end with time left: the backbones and the input sizes
`auto` timed or had on its ladder but did not choose (its choice is made before anything is measured, to fit
the budget). The probe stage's next pass (probe_stage.run_probe_stage with ``keep_for``) probes them while
each pair fits besides the reserve and the ensemble stage's room (RunContext.ensemble_room), and the ensemble
gets more diverse members. Never what the user's space pinned."""

from __future__ import annotations

import logging

from autotransfer.budget import format_duration
from autotransfer.runtime import default_device
from autotransfer.search import planner
from autotransfer.search.auto_space import resolution_ladder
from autotransfer.search.context import RunContext
from autotransfer.search.finetune_stage import search_shape
from autotransfer.search.probe_stage import probe_fits
from autotransfer.search.records import TrialRecord

log = logging.getLogger(__name__)


def widen_to_skipped_backbones(context: RunContext, best: TrialRecord | None) -> bool:
    """Add the backbones `auto` timed but left out (past its extraction share of the budget, or its count
    cap), fastest first, when ending the search now would leave more than ``planner.UNUSED_SHARE`` of the
    budget unused. True when any was added (never for backbones the user named)."""
    auto = context.auto
    left, reserve = context.deadline.left(), context.reserve(best) + context.ensemble_room(best)
    if auto is None or not planner.unused_too_much(left, context.deadline.seconds, reserve):
        return False
    timed = sorted(auto.seconds_per_image, key=auto.seconds_per_image.__getitem__)
    extra = tuple(name for name in timed if name not in context.backbones)
    if not extra:
        return False
    log.info("time budget: %s left after the search: probing the backbones `auto` left out (%s) while they fit",
             format_duration(left), ", ".join(extra))  # fmt: skip
    context.backbones = (*context.backbones, *extra)
    return True


def widen_to_other_sizes(context: RunContext, best: TrialRecord | None) -> bool:
    """Add the sizes of `auto`'s ladder (auto_space.resolution_ladder, up to the budget's largest size) it did
    not choose, when ending the search now would leave more than ``planner.UNUSED_SHARE`` of the budget unused:
    nearest the best record's size first (the larger of two as near), each only when decoding the data at it
    (timed on a few files: RunContext.decode_estimate) and probing its fastest backbone fit in what is left.
    True when any was added (never when the space pinned the sizes)."""
    auto = context.auto
    left, reserve = context.deadline.left(), context.reserve(best) + context.ensemble_room(best)
    if auto is None or not auto.seconds_per_image or not planner.unused_too_much(left, context.deadline.seconds,
                                                                                 reserve):  # fmt: skip
        return False
    if context.settings.space.resolutions:
        context.search_ended(f"the search space pins the sizes ({', '.join(map(str, context.resolutions))} px)")
        return False
    cuda = (context.device or default_device()).type == "cuda"
    ladder = resolution_ladder(auto.native_side, cuda, search_shape(context).max_resolution)
    around = best.resolution if best is not None and best.resolution else max(context.resolutions)
    per_image = min(auto.seconds_per_image[n] for n in context.backbones if n in auto.seconds_per_image)
    others = sorted(set(ladder) - set(context.resolutions), key=lambda s: (abs(s - around), -s))
    added: list[int] = []
    for size in others:
        extraction = planner.extraction_seconds(per_image, auto.profile_resolution, size, context.n_images())
        cost = context.decode_estimate(size) + planner.pair_seconds(extraction, [], probe_fits(context.objective))
        if planner.probe_pair_fits(left, reserve, cost):
            added.append(size)
            left -= cost
    if not added:
        sizes = ", ".join(map(str, sorted(others) or ladder))
        context.search_ended(f"probing another size ({sizes} px) would not fit" if others
                             else f"every size of `auto`'s ladder ({sizes} px) was probed")  # fmt: skip
        return False
    log.info("time budget: %s left after the search: probing the sizes `auto` did not choose (%s px) while they fit",
             format_duration(context.deadline.left()), ", ".join(map(str, sorted(added))))  # fmt: skip
    context.resolutions = tuple(sorted((*context.resolutions, *added)))
    return True
