"""The driver's view of a run as Tune reports it: a line per epoch and per trial that ends, each
trial's results copied into the experiment folder as they come, and its status recorded.

    ecg-ray tune experiments/quick.yaml   # "[ecg-ray] t0001 lr=0.0005 ...: epoch 2/4 ... val_macro_f1=0.2310 (1.1s)"
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path

import ray.tune

from ecg_ray import storage
from ecg_ray.models import label as model_label
from ecg_ray.results.store.folder import TRIAL_PARAMS, TRIAL_RESULTS, ExperimentDir
from ecg_ray.schema import PROGRESS_KEYS, RANK_METRIC, RANK_MODE, TRIAL_KEY

_report_imports: list[threading.Thread] = []  # EpochPrinter's imports for the report, started during a run


class EpochPrinter(ray.tune.Callback):
    """The driver's view of each trial as Tune reports it: a line per finished epoch and per trial
    that ends, fails or is retried; its results copied to the experiment folder as they come; its
    status in trial_status.json; the placement group of a trial that ended, released (with
    `reuse_workers`: unless its Tune actor, still alive, winds the run down itself; what a Tune
    actor that died later held, the next trial to need a slot frees). `release`: the fast path's
    release_placement_group; on the public path Ray Train's own cleaner frees each run's group."""

    def __init__(self, exp: ExperimentDir, n_trials: int, reuse_workers: bool = False, release=None, live=None):
        self.exp = exp
        self.live = live  # ecg_ray.results.integrations.tracking.LiveRuns where MLflow is asked for
        self.n_trials = n_trials  # this run's, all of them (Tune creates its trials as it goes)
        self.reuse_workers = reuse_workers
        self.release = release or (lambda trial_key, unless_owner_alive=False: None)
        self.ended: set[str] = set()
        self.warming: threading.Thread | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Live, one line per epoch in progress.jsonl (where files take appends) and on the console.
        if storage.cheap_writes(self.exp.path):  # else at the trial's end (_record): a request per epoch is not
            self._persist_results(trial)
        c = trial.config
        self.exp.append_progress({"trial_id": c[TRIAL_KEY], "time": time.time(), **{k: result.get(k) for k in PROGRESS_KEYS}})
        if self.live is not None:
            self.live.epoch(c[TRIAL_KEY], c, result)
        if result.get("epoch") == (c.get("epochs") or 0) - 1:  # its last epoch starts: the run nears its end
            self._warm_up_if_all_started(trials, trial)
        fold = "" if c.get("fold") is None else f" fold={c['fold']}"  # a cross-validated trial: which fold it validates on
        print(
            f"[ecg-ray] {c[TRIAL_KEY]} lr={c.get('lr')} {model_label(c)} dropout={c.get('dropout')} "
            f"{c.get('optimizer')} seed={c.get('seed')}{fold}: epoch {result.get('epoch')}/{c.get('epochs')} "
            f"train_loss={result.get('train_loss', float('nan')):.4f} val_loss={result.get('val_loss', float('nan')):.4f} "
            f"{RANK_METRIC}={result.get(RANK_METRIC, float('nan')):.4f} ({result.get('epoch_time_s', 0):.1f}s)",
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, "TERMINATED")
        epoch, epochs = (trial.last_result or {}).get("epoch"), trial.config.get("epochs")
        how = "finished" if epoch == epochs else f"stopped early by the scheduler after epoch {epoch}/{epochs}"
        self._say(trials, trial, how, ended=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._record(trial, "ERROR")
        self._say(trials, trial, f"failed for good (its error: {trial.error_file or 'not recorded'})", ended=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.release(trial.config[TRIAL_KEY])  # it failed and will be retried: free its slot first
        self._say(trials, trial, "failed; Tune retries it from its last checkpoint", ended=False)

    def _say(self, trials, trial, how: str, ended: bool) -> None:
        """One line per trial that ends or fails, with where the run stands (Tune's own status
        tables, a column per knob, are off: they were thousands of characters wide). Tune calls
        back before it changes the trial's status: `ended` says whether this trial is done."""
        key = trial.config[TRIAL_KEY]
        if ended:
            self.ended.add(key)
        best = trial.metric_analysis.get(RANK_METRIC, {}).get(RANK_MODE)
        running = sum(t.status == "RUNNING" for t in trials if t is not trial)
        print(f"[ecg-ray] {key} {how}; best {RANK_METRIC} {best if best is not None else float('nan'):.4f}. "
              f"Trials: {len(self.ended)} of {self.n_trials} ended, {running} running", flush=True)
        if ended:
            self._warm_up_if_all_started(trials, trial)

    def _warm_up_if_all_started(self, trials, trial) -> None:
        """Once no trial is left to start and the run nears its end (a trial ended, or one starts its
        last epoch), import what the report needs (torch for best_model.pt, matplotlib for the
        figures: 1.5 s of a CPU on 2 cores) and start the costs' FlopCounterMode (1.6 s), while the
        last trials train, not after them."""
        running = sum(t.status == "RUNNING" for t in trials if t is not trial) + (trial.config[TRIAL_KEY] not in self.ended)
        if self.warming is None and len(self.ended) + running >= self.n_trials:
            self.warming = threading.Thread(target=_import_report_modules, name="report-imports")
            self.warming.start()
            _report_imports.append(self.warming)  # Ray is not shut down under it

    def _persist_results(self, trial) -> None:
        """Copy the trial's params.json and result.json (every epoch Tune has seen) from Tune's
        staging folder to the experiment folder now. Tune uploads them only when it next saves the
        experiment's state, 10 s or more apart: a driver killed in between lost the last epochs of
        the history for good, even of a trial that had finished (a resume does not run it again).
        Done for every epoch on a local disk (small files), and on a bucket when the trial ends."""
        staged = Path(trial.local_path)
        for name in (TRIAL_PARAMS, TRIAL_RESULTS):  # params first: a folder is read by its params.json
            if (staged / name).is_file():
                self.exp.write_bytes(self.exp.join(staged.name, name), (staged / name).read_bytes())

    def _record(self, trial, status: str) -> None:
        self.release(trial.config[TRIAL_KEY], unless_owner_alive=self.reuse_workers)  # what a trial that died holds
        self._persist_results(trial)  # before the status says it finished: its history is there
        last_epoch = (trial.last_result or {}).get("epoch")
        best = trial.metric_analysis.get(RANK_METRIC, {}).get(RANK_MODE)  # what an Optuna search resumes from
        self.exp.update_statuses({trial.config[TRIAL_KEY]: {"status": status, "last_epoch": last_epoch, "best": best,
                                                            "ended": time.time()}})


REPORT_MODULES = ("torch", "ecg_ray.results.page.figures", "ecg_ray.results.analysis.cost")  # what the report imports that the run did not


def _import_report_modules() -> None:
    for name in REPORT_MODULES:
        importlib.import_module(name)
    importlib.import_module("ecg_ray.results.analysis.cost").warm_up()  # the costs' FlopCounterMode, started before it is timed
