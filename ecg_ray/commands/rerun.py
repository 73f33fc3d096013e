"""`ecg-ray rerun`: rebuild one trial from its experiment folder with plain PyTorch (no Ray) and check
every epoch's metrics against the recorded ones.

    ecg-ray rerun ~/ecg_ray_results/quick t0001

The trial config, the data settings and hash, and the thread count come from the folder;
the data is prepared again and must hash the same. On CPU the numbers must match bit for
bit; the command says so, or names the first epoch and metric that differ.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.results.store.state import FolderState
from ecg_ray.schema import CONFUSION, EPOCH_COLUMNS, confusion_columns


def recorded_epochs(exp: ExperimentDir, trial_id: str) -> list[dict]:
    """The recorded metrics of each epoch of one trial (the last report of an epoch wins)."""
    from ecg_ray.results.tables.history import history

    problems: list[str] = []
    hist = history(exp, problems)
    if problems:
        raise EcgRayError(f"{exp}: cannot compare against damaged records: " + "; ".join(problems))
    rows = hist[hist["trial_id"] == trial_id].sort_values("epoch")
    return rows.to_dict("records")


def rerun(exp_dir: str, trial_id: str, trust_pickle: Sequence[str] = (), out=None) -> int:
    """Re-run `trial_id` of `exp_dir` in this process; 0 when every epoch matches, 1 at the first difference.

    Progress goes to `out` (default: sys.stdout as it is when called).
    """
    out = out or sys.stdout
    import torch

    from ecg_ray.data.prepare import fold_view, prepare
    from ecg_ray.training.loop import build_trial, run_epoch

    exp = FolderState.load(ExperimentDir.parse(exp_dir))  # read once: the record, the config and the history
    record = exp.read_record()
    cfg = exp.read_config(trust_pickle=trust_pickle)
    trials = exp.recorded_trials()
    if trial_id not in trials:
        raise ConfigError(f"{exp} has no trial {trial_id!r}; its trials are {', '.join(trials)}.")
    trial = trials[trial_id]
    recorded = recorded_epochs(exp, trial_id)
    if not recorded:
        raise EcgRayError(f"Trial {trial_id} of {exp} recorded no epoch; there is nothing to compare.")
    data = prepare(cfg)
    if data.data_hash != record["data_hash"]:
        raise EcgRayError(f"The data now hashes to {data.data_hash}, but {exp} ran on {record['data_hash']}: the data "
                          "its experiment file names (data.path) no longer holds the same records. Restore them to re-run.")
    devices = {str(r.get("device")) for r in recorded if r.get("device")}
    if devices - {"cpu"}:
        print(f"[ecg-ray] {trial_id} ran on {', '.join(sorted(devices))}; a CPU re-run is bit-identical only to CPU runs",
              file=out, flush=True)
    torch.set_num_threads(int(record["settings"]["threads"]))  # CPU reductions depend on it
    data = fold_view(data, trial.fold)  # a cross-validation trial's own train and val
    state = build_trial(trial, data.weights)
    print(f"[ecg-ray] re-running {trial_id} {trial} on CPU, data {data.data_hash}", file=out, flush=True)
    for rec in recorded:
        ours = run_epoch(state, data, trial.batch_size)
        cm = [v for row in ours[CONFUSION] for v in row]
        ours |= dict(zip(confusion_columns(), cm))
        for key in [*EPOCH_COLUMNS, *confusion_columns()]:
            if ours[key] != rec[key]:
                print(f"ecg-ray: {trial_id} differs at epoch {int(rec['epoch'])}: {key} was {rec[key]!r}, "
                      f"the re-run gives {ours[key]!r}", file=sys.stderr, flush=True)
                return 1
        print(f"[ecg-ray] epoch {int(rec['epoch'])}: identical ({len(EPOCH_COLUMNS) + len(cm)} values, "
              f"val_macro_f1 {ours['val_macro_f1']:.4f})", file=out, flush=True)
    print(f"[ecg-ray] {trial_id}: all {len(recorded)} recorded epoch(s) reproduced bit for bit", file=out, flush=True)
    return 0
