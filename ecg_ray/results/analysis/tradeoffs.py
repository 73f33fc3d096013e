"""Cost beside accuracy: each config's cost columns, and the configs no other beats on both.

    ecg-ray report ~/ecg_ray_results/extended      # report/configs.* carry the costs, report/pareto.* the fronts

Costs come from the folder: parameters, MACs per record and inference latency per model shape
from costs.json (measured once by `ecg-ray tune`, ecg_ray.results.analysis.cost), training seconds per
epoch (the median over the config's epochs) and peak memory (the most any of its trials held)
from the trials' own reports. A config is on the Pareto front of a cost when no other config
has a mean val macro-F1 at least as high at a cost at most as high, one of them strictly.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from ecg_ray.config import TrialConfig
from ecg_ray.results.analysis.cost import COST_COLUMNS, SHAPE_KEYS, recorded_shape
from ecg_ray.schema import LATENCY_COLUMNS, RANK_METRIC

SCORE = f"best_{RANK_METRIC}_mean"
TRAINING_COSTS = ["epoch_time_s", "peak_rss_mb", "peak_gpu_mb"]
CONFIG_COST_COLUMNS = ["params", "macs_per_record", *TRAINING_COSTS, *LATENCY_COLUMNS]
# The costs a front is drawn against: column -> its name in the pareto_<name> flag, and its axis label.
FRONTS = {"macs_per_record": ("macs", "MACs per record (STFT excluded)"), "params": ("params", "parameters"),
          "latency_b1_ms": ("latency", "latency at batch 1 (ms, this machine)")}


def with_costs(configs: pd.DataFrame, hist: pd.DataFrame, costs: dict | None, data_length: int) -> pd.DataFrame:
    """`configs` with CONFIG_COST_COLUMNS (NaN where unmeasured: costs.json absent, an older folder)."""
    out = configs.copy()
    rows = (costs or {}).get("rows", [])
    by_shape = {tuple(_plain(v) for v in recorded_shape(r).values()): r for r in rows}
    defaults = asdict(TrialConfig())  # a key a table lacks ran at its default
    found = []
    for _, row in out.iterrows():
        shape = {k: _plain(row[k]) if k in row and _plain(row[k]) is not None else defaults[k] for k in SHAPE_KEYS}
        shape["target_length"] = int(shape.get("target_length") or 0) or int(data_length or 0)
        found.append(by_shape.get(tuple(shape[k] for k in SHAPE_KEYS), {}))
    for col in COST_COLUMNS:
        out[col] = [r.get(col) for r in found]
        if col != "latency_device":
            out[col] = pd.to_numeric(out[col], errors="coerce")
    epoch_times, rss, gpu = [], [], []
    for ids in out["trial_ids"]:
        g = hist[hist["trial_id"].isin(str(ids).split(","))]
        epoch_times.append(_median(g.get("epoch_time_s")))
        rss.append(_most(g.get("peak_rss_mb")))
        gpu.append(_most(g.get("peak_gpu_mb")))
    out["epoch_time_s"], out["peak_rss_mb"], out["peak_gpu_mb"] = epoch_times, rss, gpu
    return out


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and np.isnan(value) else value


def _median(values) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna() if values is not None else pd.Series(dtype=float)
    return float(v.median()) if len(v) else float("nan")


def _most(values) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna() if values is not None else pd.Series(dtype=float)
    return float(v.max()) if len(v) else float("nan")


def pareto_front(score, cost) -> np.ndarray:
    """True where no other point has score >= and cost <=, one strictly (higher score, lower cost
    are better). A point with an unknown score or cost is on no front."""
    s, c = np.asarray(score, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    known = ~(np.isnan(s) | np.isnan(c))
    front = np.zeros(len(s), dtype=bool)
    for i in np.flatnonzero(known):
        others = known & (s >= s[i]) & (c <= c[i]) & ((s > s[i]) | (c < c[i]))
        front[i] = not others.any()
    return front


def pareto_table(configs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The configs on at least one front (FRONTS), by rank, with their costs and a pareto_<cost> flag each."""
    out = configs.copy()
    for col, (name, _) in FRONTS.items():
        out[f"pareto_{name}"] = pareto_front(out[SCORE], out[col])
    flags = [f"pareto_{name}" for name, _ in FRONTS.values()]
    cols = ["rank", *keys, "n_seeds", "n_folds", SCORE, f"best_{RANK_METRIC}_ci_low", f"best_{RANK_METRIC}_ci_high",
            *CONFIG_COST_COLUMNS, *flags]
    return out.loc[out[flags].any(axis=1), [c for c in cols if c in out]].reset_index(drop=True)


def costs_note(costs: dict | None, configs: pd.DataFrame) -> str:
    """What the cost columns are, where they were measured, and what is missing."""
    if not costs:
        return ("No costs.json: parameters, MACs and latency were not measured (an experiment that has not finished, "
                "or one made before ecg_ray measured them); `ecg-ray tune --resume DIR` measures them.")
    devices = sorted({str(d) for d in configs["latency_device"].dropna()})
    latency = (f"latency: median of {costs.get('repeats')} forward passes on {'; '.join(devices)} (host "
               f"{costs.get('host', '?')}), which depends on the machine" if devices
               else "latency not measured (report.latency_repeats: 0)")
    return ("Costs per config: parameters and multiply-accumulates per record (torch.utils.flop_counter, STFT "
            f"excluded) of its model; training seconds per epoch (median) and peak memory of its trials; {latency}.")
