"""The whole experiment, as `ecg-ray tune` runs it, for Python and notebooks too.

    from ecg_ray import load_experiment, run_experiment
    outcome = run_experiment(load_experiment("experiments/quick.yaml"))
    print(outcome.trials.head())              # ranked by best validation macro-F1
    print(outcome.best_model, outcome.written)

Read top to bottom, it is the run: tune every trial on Ray (ecg_ray.tuning.driver.tune, which
returns the folder's state and the prepared data, not a path), rank what the trials left once
(ecg_ray.results.store.results.Results, the way Ray's examples query the ResultGrid of Tuner.fit()),
then every phase takes those values: export the best epoch's model, evaluate the top configs on
the held-out test split where there is one, predict each fold's records from the trial that held
it out (a cross-validated experiment), measure what each model shape costs
(ecg_ray.results.analysis.cost), write the tables, figures and HTML page (ecg_ray.results.report), and
log to MLflow. No phase opens the folder again, so a bucket folder is read once; the data is
prepared once. The command line prints what comes back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ecg_ray.config import DEFAULT_EXPORT_FORMATS, ExperimentConfig
from ecg_ray.errors import EcgRayError


@dataclass
class Outcome:
    """What one run of an experiment left, for the caller to print or use.

    path: the experiment folder. trials: every trial ranked (None when no epoch finished). test:
    the held-out test table (None without a test split). best_model: best_model.pt's path (None
    when its checkpoint was not kept); best_members: its models (several: the best config's
    trials as an ensemble, with best_trial_model.pt beside it). written: the tables, figures and page. problems: damage the
    report found and named. unfinished, errors: trials that did not end, and that failed for good.
    """

    path: str
    trials: object = None  # pandas.DataFrame
    test: object = None  # pandas.DataFrame
    best_model: str | None = None
    best_members: int = 0  # best_model.pt's models: 1, or an ensemble's trials
    written: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    unfinished: int = 0
    errors: int = 0
    timings: dict = field(default_factory=dict)  # seconds: "best_model" (with the test evaluation and the costs), "report"
    notes: list = field(default_factory=list)  # warnings for the console

    @property
    def ok(self) -> bool:
        return not (self.unfinished or self.errors)


def run_experiment(
    cfg: ExperimentConfig,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    tensorboard: bool = False,
    formats=DEFAULT_EXPORT_FORMATS,
    extend: bool = False,
    state=None,
) -> Outcome:
    """Tune `cfg` on Ray, then write the best model, the test evaluation and the report.

    Args:
        cfg: the experiment (ecg_ray.config.load_experiment).
        resume: continue the experiment in its folder (finished trials are kept).
        overwrite: allowed to start over in an existing experiment folder.
        address: a Ray cluster to join ('auto' or host:port); default $RAY_ADDRESS, else a new local Ray.
        num_cpus: CPUs of a new local Ray (default: all cores).
        tensorboard: Tune also writes TensorBoard event files.
        formats: the table formats to export (ecg_ray.config.EXPORT_FORMATS).
        extend: `cfg` is an edited file for the experiment already in its folder: only the trials it
            adds run, and the report covers all of them (`ecg-ray tune FILE --extend DIR`).
        state: the experiment folder as the caller already read it (ecg_ray.results.store.state.FolderState:
            `--resume` reads the config from it), so that it is read once.

    Raises:
        ecg_ray.tuning.driver.ExperimentInterrupted: Ctrl-C or SIGTERM stopped it (resumable).
        EcgRayError: bad input, named.
    """
    from ecg_ray.results.inference.predict import export_best_model
    from ecg_ray.results.report import read_results, write_report
    from ecg_ray.tuning.driver import tune

    tuned = tune(cfg, resume, overwrite, address, num_cpus, tensorboard, extend, state)
    outcome = Outcome(tuned.path)
    outcome.unfinished, outcome.errors = tuned.unfinished(cfg.n_trials)
    try:
        results = read_results(tuned.state)
    except EcgRayError:
        return outcome  # interrupted before any epoch finished
    t0 = time.monotonic()
    outcome.best_model, outcome.best_members = export_best_model(results, outcome.notes)
    if outcome.best_model is None:
        outcome.notes.append("the best epoch's checkpoint was not kept (or is damaged), so no best_model.pt was written")
    if cfg.data.has_test:
        outcome.test = evaluate_test(results, tuned.data, outcome.notes)
    if cfg.data.folds:
        out_of_fold(results, tuned.data, outcome.notes)
    measure_costs(cfg, results)
    t1 = time.monotonic()
    # The run's own tables: what is readable, with any damage named (`ecg-ray report` is strict).
    outcome.trials, outcome.written, outcome.problems = write_report(results, formats=formats, allow_partial=True)
    outcome.timings = {"best_model": t1 - t0, "report": time.monotonic() - t1}
    if cfg.tracking.mlflow_uri:  # a copy of the folder, from the driver; a server that is down is a note
        from ecg_ray.results.integrations.tracking import sync

        outcome.notes += sync(results, cfg.tracking.mlflow_uri, cfg.tracking.mlflow_experiment)
    return outcome


def evaluate_test(results, data, notes: list):
    """Evaluate the top configs' best-val-epoch checkpoints on the held-out test split and record the
    table in the folder; None (with a note) where there is nothing to evaluate."""
    from ecg_ray.results.inference.evaluate import evaluate_test as evaluate

    predictions: dict = {}
    table = evaluate(results, data, predictions=predictions)
    if table is None:
        notes.append("no test table: the test split is empty or no best-epoch checkpoint was kept")
        return None
    results.state.write_test_predictions(predictions)
    results.state.write_test_results(json.loads(table.to_json(orient="records")))
    return table


def out_of_fold(results, data, notes: list) -> None:
    """Each fold trial's best-val-epoch predictions on its own fold, into oof_predictions.json."""
    from ecg_ray.results.inference.evaluate import predict_folds

    results.state.write_oof(predict_folds(results, data, notes))


def measure_costs(cfg: ExperimentConfig, results) -> None:
    """Parameters, MACs and inference latency of every model shape the trials used, into costs.json
    (ecg_ray.results.analysis.cost): on CUDA where the trials ran on CUDA and this process has a GPU, else on
    the CPU at a trial worker's thread count. Shapes measured before (a resumed run) are kept."""
    from ecg_ray.config import TrialConfig
    from ecg_ray.results.analysis.cost import measure, recorded_shape, shape_of
    from ecg_ray.schema import CONFIG_COLUMNS

    exp = results.state
    old = exp.read_costs() or {}
    configs = [TrialConfig.from_dict({k: _plain(row[k]) for k in CONFIG_COLUMNS}) for _, row in results.trials.iterrows()]
    known = [recorded_shape(r) for r in old.get("rows", []) if old.get("repeats") == cfg.report.latency_repeats]
    todo = [t for t in configs if shape_of(t, cfg.data.target_length) not in known]
    if not todo:
        return
    device = "cuda" if _ran_on_cuda(results.hist) and _has_cuda() else "cpu"
    if cfg.report.latency_repeats:
        print(f"[ecg-ray] inference latency of {len({str(shape_of(t, cfg.data.target_length)) for t in todo})} model "
              f"shape(s) on {device} (median of {cfg.report.latency_repeats}; report.latency_repeats)", flush=True)
    rows = measure(todo, cfg.data.target_length, device, cfg.resources.cpus_per_worker, cfg.report.latency_repeats)
    keep = [r for r in old.get("rows", []) if recorded_shape(r) in known]
    exp.write_costs({"repeats": cfg.report.latency_repeats, "host": _host(), "rows": keep + rows})


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _ran_on_cuda(hist) -> bool:
    devices = hist["device"].dropna() if "device" in hist else []
    return any(str(d).startswith("cuda") for d in devices)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _host() -> str:
    import socket

    return socket.gethostname()
