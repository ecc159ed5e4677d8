"""The statuses a trial's record (search/records.py) and its leaderboard row carry, for the search and
the report alike (the report may not import the search): Optuna's state in lower case, except two kinds
of fine-tuning trial Optuna keeps as pruned that the pruner did not stop: one the time budget stopped,
and one that never trained (no room to judge it, or past ``max_trials`` in a study workers share)."""

from __future__ import annotations

BUDGET_STOPPED = "stopped (budget)"
NOT_STARTED = "not started"
RAN = ("complete", "pruned", BUDGET_STOPPED)  # trials that ran and have a score
BUDGET_REASON = "time budget"  # how the ``stopped`` reason of a trial the budget stopped starts


def trial_status(state: str, stopped: str | None) -> str:
    """The status of a trial in Optuna ``state`` (lower case) that ``stopped`` gave its reason for stopping."""
    reason = stopped or ""
    if state == "pruned" and (reason.startswith(NOT_STARTED) or reason.startswith(f"{BUDGET_REASON}: {NOT_STARTED}")):
        return NOT_STARTED
    if state == "pruned" and reason.startswith(BUDGET_REASON):
        return BUDGET_STOPPED
    return state
