"""Contracts between the declared names and ranges (ecg_ray.config) and what implements them."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecg_ray import config
from ecg_ray.config import (
    DataConfig, ExperimentConfig, ResourcesConfig, SchedulerConfig, TrialConfig, experiment_from_dict, load_experiment,
)
from ecg_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "sklearn", "ray")


def test_every_registry_implements_exactly_the_declared_names():
    from ecg_ray.results.tables.export import EXPORTERS
    from ecg_ray.tuning.schedulers import SCHEDULERS
    from ecg_ray.data.sources import SOURCES
    from ecg_ray.training.loop import OPTIMIZERS

    assert sorted(OPTIMIZERS) == sorted(config.OPTIMIZER_NAMES)
    from ecg_ray.training.loop import LR_SCHEDULES

    assert sorted(LR_SCHEDULES) == sorted(config.LR_SCHEDULES)
    assert sorted(SCHEDULERS) == sorted(config.SCHEDULER_NAMES)
    assert sorted(SOURCES) == sorted(config.SOURCE_RULES)
    assert list(EXPORTERS) == list(config.EXPORT_FORMATS)
    assert set(config.DEFAULT_EXPORT_FORMATS) <= set(EXPORTERS)


SECTIONS = [(DataConfig, "data"), (SchedulerConfig, "scheduler"), (ResourcesConfig, "resources"), (ExperimentConfig, None)]
CASES = [(cls, section, key) for cls, section in SECTIONS for key in cls.CONSTRAINTS]


@pytest.mark.parametrize("cls, section, key", CASES, ids=[f"{s or 'top'}.{k}" for _, s, k in CASES])
def test_every_constraint_refuses_its_invalid_value_naming_key_and_value(cls, section, key):
    constraint = cls.CONSTRAINTS[key]
    bad = constraint.invalid_value()
    assert not constraint.allows(bad)
    raw = {section: {key: bad}} if section else {key: bad}
    with pytest.raises(ConfigError) as err:
        experiment_from_dict(raw, origin="exp.yaml")
    full_key = f"{section}.{key}" if section else key
    assert f"exp.yaml: The '{full_key}' parameter must be {constraint}. Got {bad!r} instead." == str(err.value)


@pytest.mark.parametrize("key", list(TrialConfig.CONSTRAINTS))
def test_every_trial_key_refuses_its_invalid_value(key):
    constraint = TrialConfig.CONSTRAINTS[key]
    bad = constraint.invalid_value()
    with pytest.raises(ConfigError, match=r"^The '" + key + r"' parameter must be "):
        TrialConfig(**{key: bad})


@pytest.mark.parametrize("cls", [DataConfig, SchedulerConfig, ResourcesConfig, TrialConfig])
def test_defaults_satisfy_every_constraint(cls):
    obj = cls()
    for key, constraint in cls.CONSTRAINTS.items():
        assert constraint.allows(getattr(obj, key)), key


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").glob("*.yaml")))
def test_one_search_space_builds_both_the_grid_and_tunes_points(path):
    from ecg_ray.tuning.driver import tune_search

    cfg = load_experiment(path)
    if cfg.search_space.adaptive:  # Optuna: the trials of each batch, as its searcher makes them
        from ecg_ray.tuning.optuna_search import suggest_batch

        space_ = cfg.search_space
        draws = suggest_batch(space_, cfg.seed, 0, space_.suggest_batch, [])
        trials = space_.trials(cfg.seed, draws)
        assert len(trials) == space_.suggest_batch * len(space_.combos(cfg.seed)) and cfg.n_trials == space_.num_samples
        return
    space, search = tune_search(cfg.trials())
    points = [dict(p) for p in search._points_to_evaluate]
    for name, domain in space.items():  # every point lies inside the space Tune is told about
        assert all(p[name] in domain.categories for p in points)
    assert [p.pop("trial_key") for p in points] == [f"t{i:04d}" for i in range(len(cfg.grid()))]
    assert [TrialConfig(**p) for p in points] == cfg.grid()
    draws = cfg.search.get("num_samples", 1)  # random search: each draw times the grid
    configs = len(cfg.search_space.configs) or 1  # search.configs: each listed config times the axes
    assert len(points) == np.prod([len(values) for _, values in cfg.search_space.axes]) * draws * configs
    assert len(points) == np.prod([len(v) for v in cfg.search.values() if isinstance(v, list)]) * cfg.repeats * draws


def _modules_after(code: str, names: tuple[str, ...] = HEAVY) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + f"\nimport sys, json; print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reading_every_experiment_file_imports_no_heavy_library():
    code = "from pathlib import Path\nfrom ecg_ray.config import load_experiment\n" \
           "for p in sorted(Path('experiments').glob('*.yaml')): load_experiment(p).n_trials"
    assert _modules_after(code) == []


def test_the_cli_help_imports_no_heavy_library():
    code = "from ecg_ray.commands.main import build_parser\np = build_parser()\n" \
           "for argv in (['--help'], ['tune', '--help'], ['report', '--help']):\n" \
           "    try: p.parse_args(argv)\n    except SystemExit: pass"
    assert _modules_after(code) == []


def test_a_trials_worker_does_not_load_sklearn():
    """Its import was 0.7 s of every trial's start-up: the metrics are computed without it, and
    ecg_ray.data.prepare (which the worker unpickles the prepared data with) imports it only to prepare."""
    code = ("import numpy as np, torch\nfrom ecg_ray.tuning import worker\nimport ecg_ray.data.prepare\n"
            "from ecg_ray.config import TrialConfig\nfrom ecg_ray.training.loop import build_trial, classification_metrics\n"
            "build_trial(TrialConfig(), np.ones(4, np.float32))\nclassification_metrics(np.arange(4), np.arange(4))")
    assert _modules_after(code, ("sklearn",)) == []


def test_only_the_storage_layer_tells_paths_from_uris_or_opens_a_uri():
    """ecg_ray/storage.py is the one owner of local paths and bucket URIs (pyarrow.fs included)."""
    owner = ROOT / "ecg_ray" / "storage.py"
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "ecg_ray").rglob("*.py")
                 if p != owner and any(mark in p.read_text() for mark in ('"://"', "pyarrow.fs", "uri_fs("))]
    assert offenders == []


def test_what_crosses_the_ray_boundary_is_frozen():
    for cls in (config.WorkerSpec, config.RunSettings, TrialConfig):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    from ecg_ray.data.prepare import DataMeta

    assert DataMeta.__dataclass_params__.frozen


def test_every_package_ecg_ray_imports_is_a_runtime_dependency():
    """A cluster node installs pyproject.toml's `dependencies` only (cluster*.yaml, the RayJob's pip list):
    every third-party module ecg_ray imports (function-local imports included) comes from one of them,
    or from an extra whose modules are imported only inside functions (mlflow, on --mlflow). This is
    what `ray up`'s own venv once caught by installing: tests/test_ray_up.py now reuses this machine's
    packages for speed, and this check holds the dependency list instead."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return name.lower().replace("_", "-")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {norm(Requirement(d).name) for d in project["dependencies"]}
    extras = {norm(Requirement(d).name) for name, reqs in project["optional-dependencies"].items() if name != "test"
              for d in reqs}
    providers = packages_distributions()
    missing, eager_extras = {}, {}
    for path in sorted((ROOT / "ecg_ray").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for root in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"ecg_ray"}:
                dists = {norm(d) for d in providers.get(root, [root])}
                where = str(path.relative_to(ROOT))
                if dists & runtime:
                    continue
                if dists & extras and id(node) not in top:
                    continue
                (eager_extras if dists & extras else missing).setdefault(root, set()).add(where)
    assert missing == {}, f"imported, but in no runtime dependency of pyproject.toml: {missing}"
    assert eager_extras == {}, f"an extra's module imported at a module's top: {eager_extras}"
