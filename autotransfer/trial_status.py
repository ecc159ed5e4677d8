"""The statuses a trial's record (search/records.py) and its leaderboard row carry, for the search and
the report alike (the report may not import the search): Optuna's state in lower case, except a
fine-tuning trial the time budget stopped, which Optuna keeps as pruned but the pruner did not stop."""

from __future__ import annotations

BUDGET_STOPPED = "stopped (budget)"
RAN = ("complete", "pruned", BUDGET_STOPPED)  # trials that ran and have a score
BUDGET_REASON = "time budget"  # how the ``stopped`` reason of a trial the budget stopped starts


def trial_status(state: str, stopped: str | None) -> str:
    """The status of a trial in Optuna ``state`` (lower case) that ``stopped`` gave its reason for stopping."""
    if state == "pruned" and (stopped or "").startswith(BUDGET_REASON):
        return BUDGET_STOPPED
    return state
