"""Workers sharing one fine-tuning study keep to ``max_trials`` between them: each counts the study's
trials and then asks for one, so two may ask for the last place at once (a CI run of the distributed
tier finished 7 trials of 6). The later-numbered trial gives way and is recorded as not started."""

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from autotransfer.search.storage import PAST_MAX_TRIALS, asked_past_max_trials, unfinished_trials
from autotransfer.trial_status import NOT_STARTED, RAN, trial_status


def study_with_done(n: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for value in range(n):
        trial = study.ask()
        study.tell(trial, float(value))
    return study


def test_of_two_trials_asked_for_the_last_place_the_later_gives_way():
    study = study_with_done(2)
    first, second = study.ask(), study.ask()  # both workers counted 2 done of 3 before asking
    assert not asked_past_max_trials(study, first.number, 3)
    assert asked_past_max_trials(study, second.number, 3)
    assert not asked_past_max_trials(study, second.number, 4)  # room for both


def test_a_trial_given_way_takes_no_place_and_says_why():
    study = study_with_done(2)
    study.ask()
    late = study.ask()
    late.set_user_attr("stopped", f"{PAST_MAX_TRIALS} (3) taken by the workers sharing the study")
    study.tell(late, state=TrialState.PRUNED)
    assert unfinished_trials(study) == (2, 1, 0)
    assert not asked_past_max_trials(study, study.ask().number, 4)  # the one given way is not counted before it
    status = trial_status("pruned", late.user_attrs["stopped"])
    assert status == NOT_STARTED and status not in RAN


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_retry_of_a_dead_workers_trial_takes_its_place_and_never_gives_way():
    study = study_with_done(2)
    killed = study.ask()
    study.tell(killed, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(study, study.trials[killed.number])  # what the heartbeat check queues
    assert unfinished_trials(study) == (2, 0, 1)  # the failed trial is not done: its retry counts for it
    retry = study.ask()
    assert study.trials[retry.number].system_attrs["failed_trial"] == killed.number
    assert not asked_past_max_trials(study, retry.number, 3)
    assert asked_past_max_trials(study, study.ask().number, 3)  # the killed trial kept its place: 3 of 3 are taken


def test_a_budget_refusal_is_not_started_and_a_budget_stop_ran():
    assert trial_status("pruned", "time budget: not started (an epoch needs about 40s)") == NOT_STARTED
    assert trial_status("pruned", "time budget: stopped after epoch 2") in RAN
    assert trial_status("pruned", "pruned after epoch 3") == "pruned"
