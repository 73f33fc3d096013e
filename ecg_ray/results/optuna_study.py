"""An experiment folder as an Optuna study, for optuna-dashboard and Optuna's own analysis tools.

    ecg-ray report ~/ecg_ray_results/extended --optuna-storage sqlite:///studies.db
    optuna-dashboard sqlite:///studies.db

Any search algorithm (grid, random, Optuna) becomes one study named after the experiment: one
Optuna trial per ecg_ray trial, in trial-key order, with its searched values as params (grid
axes and explicit configs as categorical distributions, drawn keys with their own), its best
validation macro-F1 as the value (direction: maximize, the ranking's), every epoch's val
macro-F1 as an intermediate value, its state (complete; pruned where ASHA stopped it; fail
where it failed; running where it has not ended), and its key, seed and fold as user
attributes. A second write replaces the study, never doubles it. optuna is imported here only.
"""

from __future__ import annotations

import math

from ecg_ray.errors import ConfigError
from ecg_ray.schema import RANK_METRIC


def write_study(source, storage: str, study_name: str | None = None) -> tuple[str, int]:
    """Write an experiment's trials as an Optuna study in `storage` (an Optuna RDB URL): `source` is
    the Results a command holds (ecg_ray.results.results) or a folder, read once here. Returns
    (study name, trials)."""
    import logging

    import optuna

    from ecg_ray.config import experiment_from_dict
    from ecg_ray.config.search import optuna_distributions
    from ecg_ray.results.report import read_results
    from ecg_ray.results.results import Results

    optuna.logging.set_verbosity(logging.WARNING)
    results = source if isinstance(source, Results) else read_results(source)
    exp, trials, hist = results.state, results.trials, results.hist
    record = exp.read_record()
    cfg = experiment_from_dict({**record["config"], "data": {**record["config"].get("data", {}), "trust_pickle": True}},
                               origin=exp.experiment_file)  # read, never loaded: no data is touched here
    space = cfg.search_space
    dists = optuna_distributions(space, grid_axes=True)
    name = study_name or cfg.name
    try:
        optuna.delete_study(study_name=name, storage=storage)  # replaced, never doubled
    except KeyError:
        pass
    except Exception as err:  # a URL Optuna cannot open
        raise ConfigError(f"--optuna-storage {storage}: Optuna cannot open it ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]}). Pass an RDB URL such as sqlite:///studies.db.") from None
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("experiment_dir", exp.path)
    study.set_user_attr("metric", RANK_METRIC)
    study.set_user_attr("search_algorithm", space.algorithm)
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
    study.add_trials(made)
    return name, len(made)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
