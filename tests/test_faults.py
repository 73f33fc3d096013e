"""Faults end with the same table as an uninterrupted run: a worker kill, a driver SIGKILL + resume, node loss;
planted pickles are never loaded, a concurrent run is refused, a corrupt result file is named.

A killed Tune actor is tested by tests/test_ray_hardening.py (its resources freed, the trial resumed
from its checkpoint) on the session's Ray; `python benchmarks/faults.py` runs that scenario and a SIGINT
mid-run too (CI's time budget keeps them out of here)."""

import signal

import pytest

import faults

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def baseline_run(work):
    """The uninterrupted run every fault is compared with, and while it runs, a second `ecg-ray tune` of the
    same folder (refused): (its folder, the refusal's outcome)."""
    outcome = faults.concurrent_run(work, None, name="baseline")
    assert outcome.detail.endswith("first rc=0"), outcome
    return work / "results" / "baseline", outcome


@pytest.fixture(scope="module")
def baseline(baseline_run):
    return baseline_run[0]


def _check(outcome: faults.Outcome):
    assert outcome.identical, outcome
    assert outcome.trials_affected >= 1 and outcome.retries >= 1, outcome
    assert outcome.finished_trials_rerun == 0, outcome


def test_killed_worker_resumes_from_its_checkpoint(work, baseline):
    _check(faults.kill_worker(work, baseline))


# SIGKILL: the crash. A SIGINT mid-run (a graceful stop, exit 130) is `python benchmarks/faults.py`'s
# sigint_driver scenario; tests/test_hardening.py stops a run with SIGINT before its trials.
@pytest.mark.parametrize("sig", [signal.SIGKILL], ids=["sigkill"])
def test_stopped_driver_resumes_without_rerunning_finished_trials(work, baseline, sig):
    outcome = faults.stop_driver(work, baseline, sig)
    _check(outcome)
    expected_stop_rc = 130 if sig == signal.SIGINT else -signal.SIGKILL
    assert f"stop rc={expected_stop_rc}," in outcome.detail


def test_lost_node_trials_continue_elsewhere(work, baseline, s3_server):
    """The results in the bucket (where the S3 server runs) and nowhere else: the nodes share no disk."""
    _check(faults.lose_node(work, baseline, s3_server.uri("lose_node") if s3_server else None))


def test_planted_pickles_are_never_loaded(work, baseline):
    outcome = faults.planted_pickle(work, baseline)
    assert outcome.identical and outcome.handled == "never loaded", outcome
    assert "trial restarted from epoch 1: True" in outcome.detail, outcome  # the unreadable checkpoint was not fatal


def test_a_concurrent_second_run_is_refused(baseline_run):
    """Refused while the baseline ran (its own run would be one run more of the same)."""
    outcome = baseline_run[1]
    assert outcome.identical and outcome.handled == "refused at once", outcome


def test_a_corrupt_result_file_is_named(work, baseline):
    outcome = faults.corrupt_result(work, baseline)
    assert outcome.handled == "named; --allow-partial writes the rest", outcome
