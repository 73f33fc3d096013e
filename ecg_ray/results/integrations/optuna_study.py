"""An experiment folder as an Optuna study, for optuna-dashboard and Optuna's own analysis tools.

    ecg-ray report ~/ecg_ray_results/extended --optuna-storage sqlite:///studies.db
    optuna-dashboard sqlite:///studies.db

Any search algorithm (grid, random, Optuna) becomes one study named after the experiment: one
Optuna trial per ecg_ray trial, in trial-key order, with its searched values as params (grid
axes and explicit configs as categorical distributions, drawn keys with their own), its best
validation macro-F1 as the value (direction: maximize, the ranking's), every epoch's val
macro-F1 as an intermediate value, its state (complete; pruned where ASHA stopped it; fail
where it failed; running where it has not ended), and its key, seed and fold as user
attributes. The study is marked as this experiment's (its folder in the user attribute
`ecg_ray_experiment`): a second write of the same experiment replaces it, never doubles it, and
a study of that name that is not this experiment's (hand-made, another experiment's) is refused,
named with its trial count, before anything is written, unless `replace` (`--optuna-replace`)
says so; `--optuna-study NAME` writes beside it. optuna is imported here only.
"""

from __future__ import annotations

import math
import os

from ecg_ray.errors import ConfigError
from ecg_ray.schema import RANK_METRIC


MARK = "ecg_ray_experiment"  # the study's user attribute: the experiment folder that wrote it


def _optuna_error(storage: str, err: Exception, verb: str = "open") -> ConfigError:
    why = " ".join(str(err).split())
    why = why.split(" [SQL:")[0][:160]  # SQLAlchemy appends the statement and a link
    return ConfigError(f"--optuna-storage {storage}: Optuna cannot {verb} it ({type(err).__name__}: {why}). Pass "
                       "an RDB URL Optuna can write, such as sqlite:///studies.db in a writable folder.")


def claim(results, storage: str, study_name: str | None = None, replace: bool = False) -> str:
    """The study name to write `results` to in `storage`, after checking that writing there replaces
    nobody else's study: a study of that name must be absent or marked as this experiment's, or
    `replace` given. Opens the storage (a ConfigError says why it cannot be). Writes nothing."""
    import logging

    import optuna

    from ecg_ray.storage import local_sqlite_file

    optuna.logging.set_verbosity(logging.WARNING)
    name = study_name or results.state.read_record()["config"]["name"]
    db = local_sqlite_file(storage)
    if db is not None and (db.exists() and not os.access(db, os.W_OK) or not os.access(db.parent, os.W_OK)):
        raise ConfigError(f"--optuna-storage {storage}: {db if db.exists() else db.parent} is not writable; "
                          "pass a SQLite file in a folder you can write.")
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study: nothing to replace
        return name
    except Exception as err:  # noqa: BLE001  (a URL Optuna cannot open: any of SQLAlchemy's errors)
        raise _optuna_error(storage, err) from None
    owner = existing.user_attrs.get(MARK, existing.user_attrs.get("experiment_dir"))  # the latter: studies before the mark
    if owner == results.state.path or replace:
        return name
    n = len(existing.get_trials(deepcopy=False))
    whose = f"the experiment in {owner}" if owner else "not written by ecg_ray for this experiment"
    raise ConfigError(f"--optuna-storage {storage}: a study {name!r} with {n} trial(s) is already there ({whose}); "
                      "nothing was replaced. Pass --optuna-study NEW_NAME to write beside it, or --optuna-replace to replace it.")


def write_study(source, storage: str, study_name: str | None = None, replace: bool = False) -> tuple[str, int]:
    """Write an experiment's trials as an Optuna study in `storage` (an Optuna RDB URL): `source` is
    the Results a command holds (ecg_ray.results.store.results) or a folder, read once here. Replaces only
    this experiment's own study, or any with `replace` (see `claim`). Returns (study name, trials)."""
    import optuna

    from ecg_ray.config import experiment_from_dict
    from ecg_ray.config.search import optuna_distributions
    from ecg_ray.results.report import read_results
    from ecg_ray.results.store.results import Results

    results = source if isinstance(source, Results) else read_results(source)
    name = claim(results, storage, study_name, replace)
    exp, trials, hist = results.state, results.trials, results.hist
    record = exp.read_record()
    cfg = experiment_from_dict({**record["config"], "data": {**record["config"].get("data", {}), "trust_pickle": True}},
                               origin=exp.experiment_file)  # read, never loaded: no data is touched here
    space = cfg.search_space
    dists = optuna_distributions(space, grid_axes=True)
    state = optuna.trial.TrialState
    made = []
    for _, row in trials.sort_values("trial_id").iterrows():
        epochs = hist[hist["trial_id"] == row["trial_id"]].sort_values("epoch")
        steps = {int(e): float(v) for e, v in zip(epochs["epoch"], epochs[RANK_METRIC]) if _finite(v)}
        if row["status"] == "ERROR":
            st, value = state.FAIL, None
        elif row["status"] != "TERMINATED":
            st, value = state.RUNNING, None
        elif bool(row["early_stopped"]):
            st, value = state.PRUNED, None
        else:
            st, value = state.COMPLETE, float(row[f"best_{RANK_METRIC}"])
        attrs = {"trial_key": str(row["trial_id"]), "seed": int(row["seed"]), f"best_{RANK_METRIC}": float(row[f"best_{RANK_METRIC}"])}
        if "fold" in row and row["fold"] is not None and row["fold"] == row["fold"]:
            attrs["fold"] = int(row["fold"])
        params = {k: _plain(row[k]) for k in dists}
        made.append(optuna.trial.create_trial(state=st, value=value, params=params, distributions=dists,
                                              intermediate_values=steps, user_attrs=attrs))
    try:
        try:
            optuna.delete_study(study_name=name, storage=storage)  # replaced, never doubled (claim said it may be)
        except KeyError:
            pass
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for key, value in ((MARK, exp.path), ("experiment_dir", exp.path), ("metric", RANK_METRIC),
                           ("search_algorithm", space.algorithm)):
            study.set_user_attr(key, value)
        study.add_trials(made)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001  (SQLAlchemy's errors: a read-only file, a full disk)
        raise _optuna_error(storage, err, "write to") from None
    return name, len(made)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
