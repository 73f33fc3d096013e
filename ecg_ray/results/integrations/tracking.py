"""MLflow: an experiment folder logged as one parent run and one child run per trial.

    ecg-ray tune experiments/quick.yaml --mlflow http://127.0.0.1:5000
    ecg-ray report ~/ecg_ray_results/quick --mlflow sqlite:///mlflow.db     # a finished folder, afterwards

The folder stays the record; MLflow gets a copy, written from the driver only (no worker
needs a route to the server), from the same tables the report is built from:

- the parent run (tag `ecg_ray.role = experiment`): the experiment's settings as params, the
  configs table's best row as metrics, the report folder and best_model.pt as artifacts;
- a child run per trial (`mlflow.parentRunId`): its config as params, every epoch's metrics
  with `step = epoch`, tags for trial key, seed, fold (where there is one), data hash, git
  commit and status (finished, stopped by ASHA, failed, unfinished).

During a run each epoch is logged as the driver sees it (LiveRuns, from ecg_ray's Tune
callback), so MLflow shows the curves while the trials train; when the trials end, `sync`
adds what a live write missed and the rest (statuses, the parent's numbers, artifacts).

Runs are found again by the tags `ecg_ray.experiment_dir` and `ecg_ray.trial_key`, and only
epochs MLflow does not hold yet are logged, so a resume, or a second sync, continues the same
runs and never doubles them. A server that is down or refuses is a warning naming the URI;
nothing is lost (`ecg-ray report DIR --mlflow URI` logs the folder later). mlflow is imported
here only, and only when asked for.
"""

from __future__ import annotations

import math
import time

import pandas as pd

from ecg_ray.environ import environ
from ecg_ray.errors import ConfigError
from ecg_ray.schema import CONFIG_COLUMNS, EPOCH_COLUMNS, RANK_METRIC

EXTRA = "pip install -e '.[mlflow]'"
ROLE, EXP_DIR, TRIAL = "ecg_ray.role", "ecg_ray.experiment_dir", "ecg_ray.trial_key"
BATCH = 900  # MLflow takes at most 1000 metrics per log_batch


def require_mlflow() -> None:
    """Fail now, before any trial, when the extra is missing."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"MLflow tracking (--mlflow, tracking.mlflow_uri) needs the mlflow extra: {EXTRA}") from None


def _quick_failures():
    """One attempt with a short timeout: a server that is down is a warning in seconds, not after minutes of retries."""
    return environ(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")


def _status(row) -> tuple[str, str]:
    """(ecg_ray's word, MLflow's run status) for a row of the trials table."""
    if row["status"] == "ERROR":
        return "failed", "FAILED"
    if row["status"] != "TERMINATED":
        return "unfinished", "RUNNING"
    return ("stopped by ASHA", "KILLED") if bool(row.get("early_stopped")) else ("finished", "FINISHED")


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return value


def _number(value) -> float | None:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def sync(source, uri: str, experiment: str | None = None) -> list[str]:
    """Log an experiment to MLflow at `uri`: `source` is the Results a run holds
    (ecg_ray.results.store.results) or a folder (path or URI) read once here. Returns warnings (a server
    that could not be reached or written); never raises for the server's sake."""
    require_mlflow()
    import tempfile

    from mlflow.tracking import MlflowClient

    from ecg_ray.results.tables.ranking import rank_configs
    from ecg_ray.results.report import read_results
    from ecg_ray.results.store.results import Results

    results = source if isinstance(source, Results) else read_results(source)
    exp, trials, hist = results.state, results.trials, results.hist
    configs = rank_configs(trials)
    record = exp.read_record()
    runs = exp.read_runs()
    name = experiment or record.get("config", {}).get("name") or exp.name
    with tempfile.TemporaryDirectory(prefix="ecg_ray_mlflow_") as tmp:
        report_dir, models = _local_artifacts(exp, tmp)
        try:
            with _quick_failures():
                client = MlflowClient(tracking_uri=uri)
                found = client.get_experiment_by_name(name)
                exp_id = found.experiment_id if found else client.create_experiment(name)
                _log(client, exp_id, exp.path, record, runs, trials, hist, configs, report_dir, models)
                return []
        except Exception as err:  # a server down, refusing, or a store it cannot write: the run goes on
            why = " ".join(str(err).split())[:300]
            return [f"MLflow at {uri} could not be written ({type(err).__name__}: {why}); nothing more was logged there. "
                    f"The experiment folder is the record: `ecg-ray report {exp.path} --mlflow {uri}` logs it later"]


def _local_artifacts(exp, tmp: str) -> tuple[str | None, list[str]]:
    """(the report folder, the model files) as local paths for MLflow's uploads (MLflow logs local files):
    the folder's own, or a bucket's downloaded under `tmp` (ecg_ray.storage decides which)."""
    from ecg_ray import storage

    return storage.local_tree(exp.report_dir, tmp), storage.local_files([exp.best_model, exp.best_trial_model], tmp)


def _one(client, exp_id: str, tags: dict[str, str], run_name: str, parent: str | None = None):
    """The run with these tags, or a new one (never two)."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = client.search_runs([exp_id], filter_string=query, max_results=2)
    if found:
        return found[0]
    extra = {"mlflow.parentRunId": parent} if parent else {}
    return client.create_run(exp_id, run_name=run_name, tags={**tags, **extra})


def _log(client, exp_id, exp_path, record, runs, trials, hist, configs, report_dir, models) -> None:
    from mlflow.entities import Metric, Param, RunTag

    cfg = record.get("config", {})
    commit = next((r.get("git_commit") for r in reversed(runs) if r.get("git_commit")), None) or "unknown"
    parent = _one(client, exp_id, {ROLE: "experiment", EXP_DIR: exp_path}, cfg.get("name") or "experiment")
    pid = parent.info.run_id
    now = int(time.time() * 1000)
    for _, row in trials.iterrows():
        key = str(row["trial_id"])
        child = _one(client, exp_id, {ROLE: "trial", EXP_DIR: exp_path, TRIAL: key}, key, parent=pid)
        cid = child.info.run_id
        word, status = _status(row)
        tags = {"trial_key": key, "seed": str(_plain(row.get("seed"))), "data_hash": str(row.get("data_hash")),
                "git_commit": commit, "status": word}
        if "fold" in row and pd.notna(row["fold"]):
            tags["fold"] = str(_plain(row["fold"]))
        params = [] if child.data.params else [Param(k, str(_plain(row[k]))) for k in CONFIG_COLUMNS if k in row and pd.notna(row[k])]
        logged = {m.step for m in client.get_metric_history(cid, RANK_METRIC)}
        metrics = [Metric(k, value, now, int(e["epoch"]))
                   for _, e in hist[hist["trial_id"] == key].iterrows() if int(e["epoch"]) not in logged
                   for k in EPOCH_COLUMNS[1:] + ["epoch_time_s"] if k in e and (value := _number(e[k])) is not None]
        client.log_batch(cid, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
        for i in range(0, len(metrics), BATCH):
            client.log_batch(cid, metrics=metrics[i:i + BATCH])
        if status != "RUNNING":
            client.set_terminated(cid, status)
    # The parent: what the experiment was, and how its best config did.
    best = configs.iloc[0]
    params = [] if parent.data.params else [
        Param(k, str(v)[:500]) for k, v in {
            "name": cfg.get("name"), "seed": cfg.get("seed"), "repeats": cfg.get("repeats"),
            "search_algorithm": (cfg.get("search") or {}).get("algorithm", "grid"),
            "scheduler": (cfg.get("scheduler") or {}).get("name"), "data_source": (cfg.get("data") or {}).get("source"),
            "trials": len(trials), "data_hash": record.get("data_hash"),
        }.items() if v is not None]
    summary = [Metric(f"best_config_{k}", v, now, 0) for k, raw in best.items()
               if (k.endswith(("_mean", "_sd", "_ci_low", "_ci_high")) or k == "n_seeds") and (v := _number(raw)) is not None]
    summary.append(Metric("configs", float(len(configs)), now, 0))
    client.log_batch(pid, metrics=summary, params=params,
                     tags=[RunTag(k, v) for k, v in {"git_commit": commit, "experiment_dir": exp_path,
                                                      "best_config": str(best.get("trial_ids", ""))}.items()])
    if report_dir:
        client.log_artifacts(pid, report_dir, "report")
    for model in models:  # best_model.pt, and beside an ensemble best_trial_model.pt
        client.log_artifact(pid, model)
    if (trials["status"].isin(["TERMINATED", "ERROR"])).all():
        client.set_terminated(pid, "FINISHED")


class LiveRuns:
    """Each epoch to its trial's child run as the driver sees it, for following a run in MLflow.

    The first failure (a server that went down) is one warning and ends live logging for the
    run; `sync` at the end catches up what was missed.
    """

    def __init__(self, exp_path: str, uri: str, experiment: str):
        self.exp_path, self.uri, self.experiment = exp_path, uri, experiment
        self.client = self.parent = None
        self.children: dict[str, str] = {}
        self.logged: dict[str, set[int]] = {}  # per trial, the epochs MLflow holds
        self.failed = False

    def epoch(self, trial_key: str, config: dict, result: dict) -> None:
        if self.failed:
            return
        try:
            with _quick_failures():
                self._epoch(trial_key, config, result)
        except Exception as err:  # the tuning goes on; the folder is the record
            self.failed = True
            why = " ".join(str(err).split())[:200]
            print(f"[ecg-ray] warning: MLflow at {self.uri} stopped answering ({type(err).__name__}: {why}); epochs are "
                  "no longer logged live there, and the end of the run tries once more", flush=True)

    def _epoch(self, key: str, config: dict, result: dict) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        if self.client is None:
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(self.experiment)
            self.exp_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
            self.parent = _one(self.client, self.exp_id, {ROLE: "experiment", EXP_DIR: self.exp_path}, self.experiment).info.run_id
        if key not in self.children:
            run = _one(self.client, self.exp_id, {ROLE: "trial", EXP_DIR: self.exp_path, TRIAL: key}, key, parent=self.parent)
            self.children[key] = run.info.run_id
            self.logged[key] = {m.step for m in self.client.get_metric_history(run.info.run_id, RANK_METRIC)}
            if not run.data.params:
                self.client.log_batch(run.info.run_id, params=[Param(k, str(config[k])) for k in CONFIG_COLUMNS if k in config])
        step, now = int(result["epoch"]), int(time.time() * 1000)
        if step in self.logged[key]:  # a resumed trial reports its restored epoch once more
            return
        metrics = [Metric(k, v, now, step) for k in EPOCH_COLUMNS[1:] + ["epoch_time_s"] if (v := _number(result.get(k))) is not None]
        self.client.log_batch(self.children[key], metrics=metrics)
        self.logged[key].add(step)
