"""The Python API does what `ecg-ray tune` does: tune, best model, held-out test, tables, figures, page."""

import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import tiny_experiment

from ecg_ray import Outcome, load_experiment, run_experiment
from ecg_ray.commands.main import main

pytestmark = pytest.mark.ray
STAMPED = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")


def _files(folder: Path) -> list[str]:
    """The experiment folder's own files and its report (the trial folders' names carry Tune's ids, and
    Tune's state files their time of writing)."""
    return sorted([p.name for p in folder.iterdir() if p.is_file() and p.name != ".lock" and not STAMPED.search(p.name)]
                  + [f"report/{p.name}" for p in (folder / "report").iterdir()])


def test_run_experiment_from_python_writes_what_the_command_writes(ray_local, tmp_path):
    data = {"test_fraction": 0.2}
    (tmp_path / "py").mkdir()
    (tmp_path / "cli").mkdir()
    py_file = tiny_experiment(tmp_path / "py", "api", tmp_path / "py", data=data)
    outcome = run_experiment(load_experiment(py_file), formats=("csv", "latex"))
    assert isinstance(outcome, Outcome) and outcome.ok and outcome.problems == []
    assert Path(outcome.best_model) == tmp_path / "py" / "api" / "best_model.pt"
    assert list(outcome.trials["rank"]) == [1, 2] and outcome.test is not None and len(outcome.test) >= 1
    assert {Path(p).name for p in outcome.written} >= {"trials.csv", "configs.tex", "index.html", "test.csv"}

    cli_file = tiny_experiment(tmp_path / "cli", "api", tmp_path / "cli", data=data)
    assert main(["tune", str(cli_file), "--format", "csv", "latex"]) == 0
    assert _files(tmp_path / "py" / "api") == _files(tmp_path / "cli" / "api")
    columns = ["trial_id", "best_epoch", "best_val_macro_f1", "val_challenge_f1"]
    py, cli = (pd.read_csv(tmp_path / side / "api" / "report" / "trials.csv")[columns] for side in ("py", "cli"))
    assert py.equals(cli)  # the same trials, bit for bit
