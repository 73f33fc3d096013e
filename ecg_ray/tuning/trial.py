"""One trial as Tune runs it: a Tune function trainable that runs a one-worker Ray Train run.

    ecg-ray tune experiments/quick.yaml     # runs this once per grid point

`trial_driver` is the Tune trainable. It builds the trial's WorkerSpec and runs the Train run
that ecg_ray.tuning.fast_path chose for this experiment:

- the public path, Ray's documented way to run Train inside Tune: a DataParallelTrainer with the
  plain BackendConfig (one worker needs no torch.distributed process group) whose reports reach
  Tune through TuneReportCallback; Ray Train's own controller, cleaner and queue actors run beside
  the worker, and every trial starts a new worker;
- the fast path (ecg_ray.tuning._ray_internals, imported here only when it is chosen): the same run
  with its controller inside this Tune actor and, on a local Ray, the worker kept for the actor's
  next trial.

Either way the worker runs ecg_ray.tuning.worker.train_loop_per_worker, so the metrics are the same
bit for bit.
"""

from __future__ import annotations

import os
import time

import ray.train
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from ecg_ray.config import CUBLAS_WORKSPACE, ExperimentConfig, RunSettings, TrialConfig, WorkerSpec
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.schema import RANK_METRIC, RANK_MODE, TRIAL_KEY
from ecg_ray.tuning import fast_path
from ecg_ray.tuning.worker import SPEC_KEY, train_loop_per_worker

QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}
AHEAD_WAIT_S = 7 * 86400.0  # a trial started ahead waits for a slot as long as other trials run
# Tune runs the next trial in this trial's actor (reuse_actors) once this trial's thread has ended,
# and waits TUNE_FUNCTION_THREAD_TIMEOUT_S for that (Tune's documented setting, 2 s by default; read
# in this process when the actor is reset). The thread ends when fit() returns, after Train's
# controller has seen the run end and shut its worker down: with Ray's defaults (a 2 s health-check
# poll) or on a loaded machine that takes longer than 2 s, and then Tune errors the next trial
# ("Could not re-use actor") without telling its search algorithm, whose slot is never freed: the
# experiment stops progressing. The join returns as soon as the thread ends, so the longer wait
# costs nothing.
THREAD_END_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}


def train_env(cfg: ExperimentConfig, ahead: bool, local: bool) -> dict:
    """Ray Train's settings for each trial's run (Train reads them where fit() is called), on a
    tested Ray: its private knobs are in ecg_ray.tuning._ray_internals; elsewhere ({}) Ray's
    defaults hold. `ahead`: some trials start before a slot is free (ecg_ray.tuning.driver.trials_ahead
    > 0), and their placement group waits for one as long as a trial runs: Train's wait for it, which
    would otherwise end in a retry with a traceback after resources.worker_start_timeout_s, is then
    at least AHEAD_WAIT_S. Without trials started ahead it is resources.worker_start_timeout_s, as
    configured."""
    timeout = max(cfg.resources.worker_start_timeout_s, AHEAD_WAIT_S) if ahead else cfg.resources.worker_start_timeout_s
    return fast_path.train_env(timeout, local)


def run_config(key: str, exp: ExperimentDir, callbacks: list) -> ray.train.RunConfig:
    """The Train run's settings, the same on both paths but for the `callbacks` that report to Tune."""
    optional = {}
    if hasattr(ray.train, "LoggingConfig"):  # Ray 2.48 and later
        # Ray Train's own INFO lines on the console (every report's whole metrics dict, every
        # checkpoint, the worker group's start) would bury the one line per epoch ecg-ray
        # prints; they stay in Ray Train's log files.
        optional["logging_config"] = ray.train.LoggingConfig(log_level="WARNING")
    return ray.train.RunConfig(
        # Named by the trial key, never a timestamp or Tune's trial id: a retried or resumed
        # trial finds its checkpoints.
        name=key,
        storage_path=exp.train_runs,
        callbacks=callbacks,
        # Retries are Tune's (the trial restarts and this run resumes from its checkpoint), not
        # Ray Train's: a Train controller that is being stopped (ASHA, the end of a run) sees its
        # worker die first and, allowed to retry, starts a new worker group whose placement
        # group then outlives it, holding a CPU or GPU for the rest of the experiment.
        failure_config=ray.train.FailureConfig(max_failures=0),
        # The best epoch by val macro-F1 (for best_model.pt) and, always, the latest (to resume).
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=RANK_METRIC, checkpoint_score_order=RANK_MODE
        ),
        worker_runtime_env={"env_vars": {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE, **QUIET_ENV, **fast_path.worker_quiet_env()}},
        **optional,
    )


def trial_driver(config: dict, data_box: list, exp: ExperimentDir, settings: RunSettings) -> None:
    """Tune trainable: run this grid point as a one-worker Ray Train run and forward its reports."""
    started = time.time()
    os.environ.update({**THREAD_END_ENV, **settings.train_env})
    config = dict(config)
    key = config.pop(TRIAL_KEY)
    spec = WorkerSpec(
        trial=TrialConfig.from_dict(config),
        data_ref=data_box[0],  # the list kept the ObjectRef unresolved through with_parameters
        data_hash=settings.data_hash,
        threads=settings.threads,
        use_gpu=settings.use_gpu,
        driver_started=started,
    )
    run = dict(
        train_loop_config={SPEC_KEY: spec},
        backend_config=ray.train.BackendConfig(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=settings.use_gpu, resources_per_worker=settings.resources_per_worker
        ),
    )
    if settings.fast_path:
        trainer = fast_path.trial_trainer(train_loop_per_worker, settings.autoscaler, settings.reuse_workers,
                                          lambda callbacks: run_config(key, exp, callbacks), **run)
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        trainer = DataParallelTrainer(train_loop_per_worker, run_config=run_config(key, exp, [TuneReportCallback()]), **run)
    trainer.fit()
