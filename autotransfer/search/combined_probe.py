"""After the cheap stage's pairs: the best pair's probed taps, probed together.

The pooled features of several depths side by side let one linear head weigh low-level and
high-level features at once (multi-layer features: Evci et al., *Head2Toe*, ICML 2022). On small
data this beats the best single tap when no single depth holds everything that separates the
classes: on gray clip art (tf_efficientnet_lite0, 128 px), `blocks.4+blocks.6+head` scored 0.657 on
test where the best single tap scored 0.629. The parts' features are cached, so the probe costs only
its fits; it runs once, for the pair whose single-tap probe scored best, when its estimate fits the
budget, with that probe's class weighting only (a single tap's probe tries each weighting).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import optuna

from autotransfer.budget import format_duration
from autotransfer.cpu_threads import use_free_cpus
from autotransfer.models.zoo import COMBINED_TAP
from autotransfer.search import planner
from autotransfer.search.context import RunContext
from autotransfer.search.probe_stage import claim, ranking_config, record_probe_rows
from autotransfer.search.records import TrialRecord, trial_records
from autotransfer.search.storage import run_once
from autotransfer.transfer.ranking import probe_combined

log = logging.getLogger(__name__)


def probe_best_pair_combined(
    study: optuna.Study, context: RunContext, keep_for: TrialRecord | None, until: float
) -> None:
    """Probe the best pair's convolutional taps together and record it as one more probe trial.

    ``keep_for``: the best record whose refit the reserve keeps room for (``RunContext.reserve``);
    ``until``: seconds from the run's start the cheap stage may use (``planner.cheap_share``). Nothing
    happens without a pair with two probed convolutional taps, when that pair was combined before
    (a resumed run, the second pass) or when the estimate (the parts' probe seconds, for one class
    weighting) does not fit.
    """
    probes = [r for r in trial_records("probe", study) if r.status == "complete" and r.tap]
    singles = [r for r in probes if COMBINED_TAP not in r.tap]
    combined_pairs = {r.pair for r in probes if COMBINED_TAP in r.tap}
    if not singles or not context.settings.space.probe_combine_taps:
        return
    best = max(singles, key=lambda r: r.val_score)
    pair = best.pair
    if pair in combined_pairs:
        return
    name, resolution = best.backbone, best.resolution
    backbone = context.backbone(name)
    parts = [r for r in singles if r.pair == pair and backbone.tap(r.tap).stride]
    if len(parts) < 2:
        return
    config = ranking_config(context)
    weightings = max(1, len(config.class_weights))
    expected = sum(r.probe_seconds or 0.0 for r in parts) / weightings
    reserve = context.reserve(keep_for)
    deadline = context.deadline
    if not planner.probe_pair_fits(deadline.left(), reserve, expected) or deadline.elapsed() + expected > until:
        log.info("time budget: no room to probe the taps of %s together (about %s)", pair, format_duration(expected))
        return
    weight = best.class_weight or "none"
    config = replace(config, class_weights=(None if weight == "none" else weight,), deadline=deadline.less(reserve))
    taps = [r.tap for r in parts]

    def work() -> bool:
        use_free_cpus()
        row = probe_combined(context.dataset(resolution), backbone, taps, config)
        record_probe_rows(study, context, name, resolution, [row], extract_seconds_pair=None, whole_pair=False)
        return True

    if context.settings.options.storage:  # workers sharing the study: one of them probes it
        run_once(context.storage, claim(f"{pair}/combined"), work, str(context.out))
    else:
        work()
