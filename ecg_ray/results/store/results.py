"""What an experiment left, read once and ranked: the value every post-run phase takes.

    from ecg_ray.results.report import read_results
    results = read_results("s3://bucket/results/quick")
    print(results.trials.head())   # ranked by best validation macro-F1

`ecg_ray.results.report.read_results` takes a folder (path, URI) or the FolderState a command
already holds (what `tune` returns), builds the history and the ranking once, and keeps the
damage it found in `problems`. The best model, the test evaluation, the out-of-fold
predictions, the costs, the report and the MLflow sync all take it, the way Ray's examples
query the ResultGrid that `Tuner.fit()` returns; a checkpoint any of them reads is read once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.results.store.state import FolderState
from ecg_ray.schema import RANK_METRIC


@dataclass
class Results:
    """An experiment's trials ranked, its per-epoch history and the folder state they came from.

    state: the folder, read once (its records, Tune's trial files). trials: one row per trial,
    ranked. hist: one row per epoch. problems: what could not be read, each named.
    """

    state: FolderState
    trials: pd.DataFrame
    hist: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    _checkpoints: dict = field(default_factory=dict, repr=False)  # (trial, epoch, value) -> the saved dict

    @property
    def path(self) -> str:
        return self.state.path

    def checkpoint(self, trial_id: str, epoch: int, value: float, notes: list[str] | None = None) -> dict | None:
        """The kept checkpoint of `trial_id` at its best epoch, or None (ecg_ray.results.inference.predict.best_checkpoint),
        read from storage once for all the phases that use it."""
        key = (str(trial_id), int(epoch), float(value))
        if key not in self._checkpoints:
            self._checkpoints[key] = best_checkpoint(self.state, *key, notes)
        return self._checkpoints[key]


def best_checkpoint(exp: ExperimentDir, trial_id: str, epoch: int, value: float, notes: list[str] | None = None) -> dict | None:
    """The kept checkpoint of `trial_id` at its best epoch, or None.

    The tables call the first epoch reaching the best val macro-F1 the best; Ray keeps one
    checkpoint by that score and may keep a later epoch that ties it. Then that epoch is
    used: same val macro-F1, its `metrics["epoch"]` says which. A checkpoint that cannot be
    read safely (truncated by a full disk, or holding more than tensors) is left out and
    named in `notes`, never fatal to the tables.
    """
    kept = []
    for path in exp.checkpoints(trial_id):
        saved = read_kept_checkpoint(exp, path, notes)
        if saved is not None:
            kept.append(saved)
    exact = [s for s in kept if s.get("metrics", {}).get("epoch") == epoch]
    tied = sorted((s for s in kept if s.get("metrics", {}).get(RANK_METRIC) == value), key=lambda s: s["metrics"]["epoch"])
    return (exact or tied or [None])[0]


def read_kept_checkpoint(exp: ExperimentDir, path: str, notes: list[str] | None = None) -> dict | None:
    """One checkpoint file as a dict, or None (named in `notes`) when it is damaged or unsafe."""
    import io

    from ecg_ray.training.loop import read_checkpoint

    try:
        saved = read_checkpoint(io.BytesIO(exp.read_bytes(path)))
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ValueError for bad files
        why = (str(err).strip().splitlines() or [""])[0][:160]
        if notes is not None:
            notes.append(f"checkpoint {path} is damaged or unsafe to load ({type(err).__name__}: {why}); left out")
        return None
    return saved if isinstance(saved, dict) else None
