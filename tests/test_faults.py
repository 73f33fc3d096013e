"""Faults end with the same table as an uninterrupted run: worker kill, driver SIGINT/SIGKILL + resume, node loss."""

import signal

import pytest

import faults

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def baseline(work):
    return faults.run_baseline(work)


def _check(outcome: faults.Outcome):
    assert outcome.identical, outcome
    assert outcome.trials_affected >= 1 and outcome.retries >= 1, outcome
    assert outcome.finished_trials_rerun == 0, outcome


def test_killed_worker_resumes_from_its_checkpoint(work, baseline):
    _check(faults.kill_worker(work, baseline))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_stopped_driver_resumes_without_rerunning_finished_trials(work, baseline, sig):
    outcome = faults.stop_driver(work, baseline, sig)
    _check(outcome)
    expected_stop_rc = 130 if sig == signal.SIGINT else -signal.SIGKILL
    assert f"stop rc={expected_stop_rc}," in outcome.detail


def test_lost_node_trials_continue_elsewhere(work, baseline):
    _check(faults.lose_node(work, baseline))
