"""Every command fed malformed input: exit 2, one line on stderr naming the problem, no traceback,
nothing created (no storage folder, no cache entry, no stray file beside the inputs).

Each case builds its inputs in a fresh folder and returns the command line; the folder's
listing after the command must equal the listing before it. All refusals happen before
Ray starts, so the suite runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecg_ray.commands.main import main

GARBAGE = bytes(range(256)) * 8  # not text, not YAML, not Parquet, not a pickle, not a model


def _write(path: Path, data: bytes | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def _folder_with_record(t: Path, record: str) -> str:
    """An experiment folder whose ecg_ray_experiment.json holds `record` (text), nothing else."""
    _write(t / "results" / "e" / "ecg_ray_experiment.json", record)
    return str(t / "results" / "e")


def _tune(*args: str):
    return lambda t: ["tune", *args, "--storage", str(t / "out")]


CASES = {
    # tune: the experiment file
    "tune: no such file": lambda t: ["tune", str(t / "missing.yaml"), "--storage", str(t / "out")],
    "tune: a folder as the file": lambda t: (t / "d").mkdir() or ["tune", str(t / "d"), "--storage", str(t / "out")],
    "tune: binary file": lambda t: ["tune", _write(t / "x.yaml", GARBAGE), "--storage", str(t / "out")],
    "tune: a YAML list": lambda t: ["tune", _write(t / "x.yaml", "- 1\n- 2\n"), "--storage", str(t / "out")],
    "tune: empty file": lambda t: ["tune", _write(t / "x.yaml", ""), "--storage", str(t / "out")],
    "tune: unknown key": lambda t: ["tune", _write(t / "x.yaml", "serach:\n  lr: 0.1\n"), "--storage", str(t / "out")],
    "tune: key twice": lambda t: ["tune", _write(t / "x.yaml", "seed: 1\nseed: 2\n"), "--storage", str(t / "out")],
    "tune: broken YAML": lambda t: ["tune", _write(t / "x.yaml", "search: {lr: [0.1\n"), "--storage", str(t / "out")],
    # tune: command-line values
    "tune: --data missing": _tune("experiments/quick.yaml", "--data", "/nonexistent/training2017"),
    "tune: --data of unknown kind": lambda t: ["tune", "experiments/quick.yaml", "--data", _write(t / "notes.txt", "hi"), "--storage", str(t / "out")],
    "tune: --data garbage parquet": lambda t: ["tune", "experiments/quick.yaml", "--data", _write(t / "x.parquet", GARBAGE), "--storage", str(t / "out")],
    "tune: --storage ftp://": lambda t: ["tune", "experiments/quick.yaml", "--storage", "ftp://host/results"],
    "tune: --storage hdfs://": lambda t: ["tune", "experiments/quick.yaml", "--storage", "hdfs://nn/results"],
    "tune: --num-cpus not a number": _tune("experiments/quick.yaml", "--num-cpus", "four"),
    "tune: --format unknown": _tune("experiments/quick.yaml", "--format", "xlsx"),
    "tune: unknown option": _tune("experiments/quick.yaml", "--epochs", "3"),
    "tune: file and --resume": lambda t: ["tune", "experiments/quick.yaml", "--resume", str(t / "results" / "e")],
    "tune: --trust-pickle of nothing read": _tune("experiments/quick.yaml", "--trust-pickle", "/tmp/x.pkl"),
    # tune --resume: the folder
    "resume: no such folder": lambda t: ["tune", "--resume", str(t / "nowhere")],
    "resume: a folder without a record": lambda t: (t / "results" / "e").mkdir(parents=True) or ["tune", "--resume", str(t / "results" / "e")],
    "resume: a damaged record": lambda t: ["tune", "--resume", _folder_with_record(t, '{"config": {"na')],
    "resume: a record without config": lambda t: ["tune", "--resume", _folder_with_record(t, json.dumps({"grid": []}))],
    "resume: a record with a bad config": lambda t: ["tune", "--resume", _folder_with_record(t, json.dumps({"config": {"seed": "x"}}))],
    "resume: ftp://": lambda t: ["tune", "--resume", "ftp://host/results/e"],
    # the other commands
    "repeat: no such folder": lambda t: ["repeat", str(t / "nowhere")],
    "repeat: --top 0": lambda t: ["repeat", _folder_with_record(t, json.dumps({"config": {}})), "--top", "0"],
    "report: no such folder": lambda t: ["report", str(t / "nowhere")],
    "report: an empty folder": lambda t: (t / "empty").mkdir() or ["report", str(t / "empty")],
    "report: ftp://": lambda t: ["report", "ftp://host/results/e"],
    "report: --format unknown": lambda t: ["report", str(t), "--format", "docx"],
    "rerun: no such folder": lambda t: ["rerun", str(t / "nowhere"), "t0000"],
    "rerun: a damaged record": lambda t: ["rerun", _folder_with_record(t, "{"), "t0000"],
    "predict: no such model": lambda t: ["predict", str(t / "missing.pt"), "synthetic"],
    "predict: a garbage model": lambda t: ["predict", _write(t / "m.pt", GARBAGE), "synthetic"],
    "predict: a JSON model": lambda t: ["predict", _write(t / "m.pt", "{}"), "synthetic"],
    "stop-node: /": lambda t: ["stop-node", "--temp-dir", "/"],
    "stop-node: a folder without a session": lambda t: (t / "ray").mkdir() or ["stop-node", "--temp-dir", str(t / "ray")],
    "submit: no such file": lambda t: ["submit", "--no-wait", str(t / "missing.yaml")],
    "submit: a binary file": lambda t: ["submit", "--no-wait", _write(t / "x.yaml", GARBAGE)],
    "submit: not an experiment file": lambda t: ["submit", "--no-wait", _write(t / "id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n")],
    "data check: no such path": lambda t: ["data", "check", str(t / "missing")],
    "data check: unknown kind": lambda t: ["data", "check", _write(t / "notes.txt", "hi")],
    "data check: garbage parquet": lambda t: ["data", "check", _write(t / "x.parquet", GARBAGE)],
    "data check: garbage pickle": lambda t: ["data", "check", _write(t / "x.pkl", GARBAGE), "--trust-pickle", str(t / "x.pkl")],
    "data check: pickle without trust": lambda t: ["data", "check", _write(t / "x.pkl", GARBAGE)],
    "data check: --min-length not a number": lambda t: ["data", "check", "synthetic", "--min-length", "short"],
    "data convert: no such source": lambda t: ["data", "convert", str(t / "missing"), str(t / "out.parquet")],
    "data convert: --max-length below --min-length": lambda t: ["data", "convert", "synthetic", str(t / "out.parquet"),
                                                               "--min-length", "3000", "--max-length", "100"],
}


def _finished(t: Path) -> str:
    """A finished experiment folder (two trials), as `ecg-ray tune` leaves it."""
    from helpers import fake_experiment

    return str(fake_experiment(t / "results" / "done", [("t0000", {"lr": 1e-3}, [0.3]), ("t0001", {"lr": 1e-4}, [0.2])]))


def _foreign_study(t: Path) -> str:
    """An Optuna storage holding a hand-made study named as the experiment `_finished` makes."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)  # its own lines on stderr are not the command's
    url = f"sqlite:///{t / 'studies.db'}"
    optuna.create_study(study_name="done", storage=url).optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    return url


CASES |= {
    # every command's options, before any data is prepared and before Ray starts
    "tune: --num-cpus 0": _tune("experiments/quick.yaml", "--num-cpus", "0"),
    "tune: --num-cpus -1": _tune("experiments/quick.yaml", "--num-cpus", "-1"),
    "tune: --num-cpus 100000": _tune("experiments/quick.yaml", "--num-cpus", "100000"),
    "tune: --mlflow notaurl://x": _tune("experiments/quick.yaml", "--mlflow", "notaurl://x"),
    "tune: --mlflow a file store": lambda t: ["tune", "experiments/quick.yaml", "--mlflow", f"file://{t}/mlruns", "--storage", str(t / "out")],
    "tune: tracking.mlflow_uri a file store": lambda t: ["tune", _write(t / "x.yaml", f"tracking:\n  mlflow_uri: file://{t}/mlruns\n"),
                                                         "--storage", str(t / "out")],
    "repeat: --seeds 0": lambda t: ["repeat", _finished(t), "--seeds", "0"],
    "repeat: --folds 1": lambda t: ["repeat", _finished(t), "--folds", "1"],
    "repeat: --num-cpus 0": lambda t: ["repeat", _finished(t), "--num-cpus", "0"],
    "compare: --top 0": lambda t: ["compare", _finished(t), _finished(t / "b"), "--out", str(t / "cmp"), "--top", "0"],
    "compare: a report/ folder": lambda t: ["compare", _finished(t) + "/report", _finished(t / "b"), "--out", str(t / "cmp")],
    "report: a storage folder": lambda t: _finished(t) and ["report", str(t / "results")],
    "report: --out on a read-only file system": lambda t: ["report", _finished(t), "--out", "/sys/ecg_ray_report"],
    "report: --optuna-storage with another study of that name": lambda t: ["report", _finished(t), "--optuna-storage",
                                                                          _foreign_study(t)],
    "report: --mlflow a file store": lambda t: ["report", _finished(t), "--mlflow", f"file://{t}/mlruns"],
    "k8s: --storage ends the line": lambda t: ["k8s", "experiments/quick.yaml", "--storage", "s3://b/x; rm -rf / #"],
    "k8s: --source with a line break": lambda t: ["k8s", "experiments/quick.yaml", "--source", "s3://b/x\nkind: Pod.zip"],
    "k8s: --source not a URI": lambda t: ["k8s", "experiments/quick.yaml", "--source", "not a uri"],
    "k8s: --name not a name": lambda t: ["k8s", "experiments/quick.yaml", "--name", "My Job"],
    "k8s: --gpus 0": lambda t: ["k8s", "experiments/quick.yaml", "--gpus", "0"],
    "k8s: --out in a read-only file system": lambda t: ["k8s", "experiments/quick.yaml", "--out", "/sys/rayjob.yaml"],
    "stop-node: --grace-period -1": lambda t: (t / "ray").mkdir() or ["stop-node", "--temp-dir", str(t / "ray"), "--grace-period", "-1"],
    "tune: --address not an address": _tune("experiments/quick.yaml", "--address", "my cluster"),
    "tune: --address a port out of range": _tune("experiments/quick.yaml", "--address", "10.0.0.1:70000"),
    "submit: --address not a URL": lambda t: ["submit", "--address", "ftp://head:8265", "--no-wait", "experiments/quick.yaml"],
    "data check: --target-length 5": lambda t: ["data", "check", "synthetic", "--target-length", "5"],
    "data convert: --sampling-rate 0": lambda t: ["data", "convert", "synthetic", str(t / "out.parquet"), "--sampling-rate", "0"],
}


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_refused_in_one_line_and_creates_nothing(case, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    cache = tmp_path / "cache"
    monkeypatch.setenv("ECG_RAY_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default storage, ~/ecg_ray_results, lies here
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow's own opt-in to its file store
    argv = CASES[case](work)
    before = _listing(work)
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2, (rc, out[-2000:], err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("ecg-ray") and ": error: " in lines[0], err
    assert "Traceback" not in err + out and len(err) < 3000
    assert _listing(work) == before, _listing(work) - before  # no storage folder, no lock, no half-written output
    assert not cache.exists() and not (tmp_path / "home").exists()
