"""The gate between Ray's public API and the fast path (ecg_ray.tuning.fast_path), and what each path
guarantees: the same metrics bit for bit, every private name accounted for, nothing patched on import."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_experiment

from ecg_ray.errors import ConfigError
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.results.report import build_report
from ecg_ray.schema import RUN_COLUMNS, TIMING_KEYS
from ecg_ray.tuning import fast_path

INTERNALS = Path(__file__).resolve().parents[1] / "ecg_ray" / "tuning" / "_ray_internals.py"


def private_names() -> dict:
    """_ray_internals.PRIVATE_NAMES, read from its source: the module itself may not import on a new Ray."""
    for node in ast.parse(INTERNALS.read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["PRIVATE_NAMES"]:
            return ast.literal_eval(node.value)
    raise AssertionError("no PRIVATE_NAMES in _ray_internals.py")


def installed(module_name: str, name: str) -> bool:
    try:
        target = importlib.import_module(module_name)
    except ImportError:
        return False
    for part in name.split("."):
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
    return True


def test_every_private_name_the_fast_path_uses_is_in_the_installed_ray():
    """On a Ray the fast path is tested with, every listed name is there. On a new Ray this is the
    test that fails first, naming what moved; the fast path's `auto` then takes the public path."""
    import ray

    missing = [f"{m}.{n}" for m, names in private_names().items() for n in names if not installed(m, n)]
    assert missing == [], f"Ray {ray.__version__} lacks {missing}: adapt ecg_ray/tuning/_ray_internals.py"
    assert ray.__version__ in fast_path.TESTED_RAY, (
        f"Ray {ray.__version__} has every private name; run the whole suite on it, then add it to TESTED_RAY")


def test_the_internals_import_no_private_name_that_is_not_listed():
    listed = {f"{m}.{n}" for m, names in private_names().items() for n in names} | set(private_names())
    imported = set()
    for node in ast.walk(ast.parse(INTERNALS.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ray") and (
                "_" in node.module.replace("ray.", "").split(".")[0][:1] or "._" in node.module or "internal_kv" in node.module):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    unlisted = {name for name in imported if name not in listed and name.rsplit(".", 1)[0] not in listed}
    assert imported and unlisted == set()


RAY_ATTRIBUTES = [  # what the fast path replaces inside a run (and what the old code patched on import)
    ("ray.tune.trainable.function_trainable", "FunctionTrainable.cleanup"),
    ("ray.tune.trainable.trainable", "disable_ipython"),
    ("ray.train.v2._internal.execution.worker_group.worker_group", "SynchronizationActor"),
    ("ray.train.v2._internal.execution.worker_group.state", "_shutdown_sync_actor"),
    ("ray.train.v2._internal.execution.scaling_policy.scaling_policy", "TrainAutoscalingCoordinatorClient"),
    ("ray._private.node", "Node.start_monitor"),
    ("ray._private.node", "Node.start_api_server"),
]


def test_importing_every_ecg_ray_module_patches_nothing_in_ray():
    modules = sorted(".".join(p.relative_to(INTERNALS.parents[2]).with_suffix("").parts).removesuffix(".__init__")
                     for p in (INTERNALS.parents[1]).rglob("*.py") if p.name != "__main__.py")  # that one runs the CLI
    code = (
        "import importlib, operator\n"
        f"attrs = {RAY_ATTRIBUTES!r}\n"
        "def look():\n"  # a name this Ray lacks is None (the fast path does not run there)
        "    return [operator.attrgetter(name)(importlib.import_module(module)) if hasattr(importlib.import_module(module),"
        " name.split('.')[0]) else None for module, name in attrs]\n"
        "before = look()\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"  # only the fast path's module may fail to import, on a Ray it is not tested with
        f"        assert name.endswith('_ray_internals') and not {fast_path.choose('auto').fast}, name\n"
        "print([a for a, b, c in zip(attrs, before, look()) if b is not c])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_choice_follows_the_setting_and_the_ray_release(monkeypatch):
    import ray

    assert fast_path.choose(False).fast is False
    assert "resources.fast_path: false" in fast_path.choose(False).why
    if ray.__version__ in fast_path.TESTED_RAY:
        assert fast_path.choose("auto").fast and fast_path.choose(True).fast
    monkeypatch.setattr(fast_path, "TESTED_RAY", ("0.0.1",))
    chosen = fast_path.choose("auto")
    assert not chosen.fast and f"not {ray.__version__}" in chosen.why and "public API" in chosen.why
    with pytest.raises(ConfigError, match=r"resources.fast_path is true, but the fast path is tested on Ray 0.0.1"):
        fast_path.choose(True)


def test_a_tested_ray_that_lacks_a_name_takes_the_public_path_and_refuses_true(monkeypatch):
    import ray

    monkeypatch.setattr(fast_path, "TESTED_RAY", (ray.__version__,))
    real = importlib.import_module

    def without_internals(name, *args):
        if name == "ecg_ray.tuning._ray_internals":
            raise ImportError("cannot import name 'WorkerGroup' from 'ray.train.v2._internal...'")
        return real(name, *args)

    monkeypatch.setattr(fast_path.importlib, "import_module", without_internals)
    chosen = fast_path.choose("auto")
    assert not chosen.fast and "cannot import name 'WorkerGroup'" in chosen.why
    with pytest.raises(ConfigError, match="lacks a private name"):
        fast_path.choose(True)


def test_fast_path_true_on_an_untested_ray_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from ecg_ray.commands.main import main

    exp = tiny_experiment(tmp_path, "refused", tmp_path, resources={"fast_path": True})
    monkeypatch.setattr(fast_path, "TESTED_RAY", ("0.0.1",))
    assert main(["tune", str(exp)]) == 2
    assert not (tmp_path / "refused").exists()


def _numbers(exp: ExperimentDir):
    hist = build_report(exp)[1]
    return hist.drop(columns=[c for c in [*RUN_COLUMNS, *TIMING_KEYS, "time_total_s"] if c in hist.columns])


@pytest.mark.ray
def test_both_paths_give_the_same_metrics_bit_for_bit_under_asha(asha_in_turn):
    """Four trials x 2 epochs under ASHA on one CPU (trials in turn, so ASHA decides the same on both),
    on Ray's public API with Ray's defaults (as on a Ray this project has not tested) and on the fast
    path (where this Ray has it): the same history, bit for bit, ASHA's stops included, every trial
    ended and every placement group freed (the runs end their Ray). With Ray's defaults a trial's
    thread outlived Tune's 2 s wait to reuse its actor, and the grid stopped after its first trial."""
    runs = {}
    for fast, variant in ((False, "public"), (True, "kept")):
        if fast and not fast_path.choose("auto").fast:
            continue
        exp, printed = asha_in_turn(variant)
        assert ("trials on the fast path" if fast else "trials on Ray's public API") in printed
        assert exp.read_record()["settings"]["fast_path"] is fast
        assert bool(exp.read_record()["settings"]["train_env"]) is fast  # the public run: Ray's defaults
        trials = build_report(exp)[0]
        assert (trials["status"] == "TERMINATED").all() and sorted(trials["epochs_run"]) == [1, 2, 2, 2]
        runs[fast] = _numbers(exp)
    if True in runs:
        assert runs[False].equals(runs[True])
