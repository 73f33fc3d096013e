"""`ecg-ray repeat`: the top configs of a finished experiment, again, at several seeds.

    ecg-ray repeat ~/ecg_ray_results/seed_grid --top 4 --seeds 3

Prune widely with one seed (ASHA), then spend seeds where the decision is made: this
builds a new experiment from the source folder's recorded config, with the top K configs
(by best val macro-F1; by its mean when the source had several seeds) listed under
`search.configs`, `repeats: N`, no early stopping (it would stop seeds one by one), and
`origin` recording where they came from. The data settings, and so the split, are the source's;
with `--folds K` the same records are cross-validated instead (K folds drawn from the same seed).
"""

from __future__ import annotations

from collections.abc import Sequence

from ecg_ray.config import ExperimentConfig, experiment_from_dict
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.results.store.state import FolderState
from ecg_ray.schema import CONFIG_COLUMNS, RANK_METRIC


def _plain(value):
    return value.item() if hasattr(value, "item") else value  # numpy scalars -> int, float, str


def repeat_config(exp_dir: str, top: int, seeds: int, name: str | None = None, storage: str | None = None,
                  trust_pickle: Sequence[str] = (), folds: int | None = None) -> ExperimentConfig:
    """The follow-up experiment: the top `top` configs of `exp_dir` at `seeds` seeds each, on
    `folds` cross-validation folds when given (the source's data settings otherwise)."""
    import pandas as pd

    from ecg_ray.results.report import build_report
    from ecg_ray.results.tables.ranking import rank_configs

    if top < 1 or seeds < 1:
        raise ConfigError(f"--top and --seeds must be at least 1. Got --top {top} --seeds {seeds} instead.")
    if folds is not None and not 2 <= folds <= 100:
        raise ConfigError(f"--folds must be a number of folds from 2 to 100. Got {folds} instead.")
    src = FolderState.load(ExperimentDir.parse(exp_dir))  # read once (a bucket's folder downloaded once)
    cfg = src.read_config(trust_pickle=trust_pickle)
    record = src.read_record()
    problems: list[str] = []
    trials, _ = build_report(src, problems)
    if problems:
        raise EcgRayError(f"{src} is damaged, so its ranking cannot be trusted: " + "; ".join(problems))
    ranked = rank_configs(trials).head(top)
    keys = [c for c in CONFIG_COLUMNS if c not in ("seed", "fold")]
    raw = cfg.to_dict()
    if folds is not None:
        raw["data"] = raw["data"] | {"folds": folds}
    raw.update(
        name=name or f"{src.name}_top{top}x{seeds}" + (f"_cv{folds}" if folds else ""),
        storage_path=storage or src.storage_root,
        # A key a trial was recorded without (an older ecg_ray) is left out: it ran with the default.
        search={"configs": [{k: _plain(row[k]) for k in keys if k in row and not pd.isna(row[k])} for _, row in ranked.iterrows()]},
        repeats=seeds,
        scheduler={"name": "none"},
        origin={
            "experiment": src.path,
            "data_hash": record["data_hash"],
            "top": top,
            "ranked_by": f"best_{RANK_METRIC}" + ("_mean" if (ranked["n_seeds"] > 1).any() else ""),
            "trial_ids": [t for ids in ranked["trial_ids"] for t in ids.split(",")],
            **({"folds": folds} if folds else {}),
        },
    )
    return experiment_from_dict(raw, origin=f"ecg-ray repeat {src}")
