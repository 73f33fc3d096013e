"""The Tune driver: one deterministic trial per grid point, each a one-worker Ray Train run.

    ecg-ray tune experiments/quick.yaml

`tune` reads as four phases: preflight (storage, folder state),
prepare (data, before Ray starts), fit (Tune, with Ctrl-C/SIGTERM turned into a
graceful stop) and finish (statuses, autoscaler clean-up). What the folder
holds is ecg_ray.results.folder's; what each trial runs is ecg_ray.tuning.trial.

Tune is given the trials as explicit points, each under its stable trial key.
A resume is a new Tune run over the trials that have not finished, rebuilt from
ecg_ray's own JSON (the experiment file, trial_status.json) and Train's JSON
checkpoint index: Tune's pickled state (tuner.pkl, experiment_state) in a
folder is never read, so nothing in storage runs as code on the resuming machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import ray
import ray.autoscaler.sdk
import ray.tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.search.basic_variant import BasicVariantGenerator

from ecg_ray import provenance
from ecg_ray.config import ExperimentConfig, RunSettings, TrialConfig
from ecg_ray.data.prepare import PreparedData, prepare
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.results.folder import EXPERIMENT_FILE, TRIAL_PARAMS, TRIAL_RESULTS, ExperimentDir, check_writable
from ecg_ray.tuning.schedulers import build_scheduler
from ecg_ray.schema import PROGRESS_KEYS, RANK_METRIC, RANK_MODE, TRIAL_KEY
from ecg_ray.tuning import fast_path
from ecg_ray.tuning.trial import QUIET_ENV, train_env, trial_driver

RAY_START_ATTEMPTS = 3
TUNE_AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"  # Tune's switch for the loggers it adds itself
_ray_stopping: list[threading.Thread] = []  # a shutdown of the local Ray still running (at most one)
_report_imports: list[threading.Thread] = []  # EpochPrinter's imports for the report, started during a run


def _stop_ray_in_background() -> None:
    """Shut the local Ray down in a thread (0.1-0.4 s on 2 cores), overlapping what the command does
    next; Python joins the thread before it exits, and init_ray before it starts Ray again. It first
    waits for the report's imports: a torch import still running while Ray shut down ended the
    process (Ray's core worker: "already been shutdown ... The process will exit"), once in three runs."""

    def stop():
        while _report_imports:
            _report_imports.pop().join()
        ray.shutdown()

    thread = threading.Thread(target=stop, name="ray-shutdown")
    thread.start()
    _ray_stopping.append(thread)


def _wait_for_ray_to_stop() -> None:
    while _ray_stopping:
        _ray_stopping.pop().join()


def init_ray(address: str | None = None, num_cpus: int | None = None, fast: bool = False) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a fresh local Ray on loopback.

    `fast`: the trials take the fast path, so a local Ray starts without the services only Ray's
    public path needs (the dashboard, whose State API Train's placement-group cleaner asks whether a
    run's controller is alive; the autoscaler monitor; idle prestarted workers).

    A start that fails (a loaded machine: the dashboard or a node too slow to come up) is
    retried; if it keeps failing, one paragraph says why and what to do.
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    _wait_for_ray_to_stop()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            if address:
                _check_reachable(address)
                ray.init(address=address, log_to_driver=True)
            else:
                # "local" starts a fresh instance even when a stale /tmp/ray/ray_current_cluster exists.
                # `ecg-ray tune` sets LOOPBACK_ENV before Ray is imported, so every process of this Ray
                # listens on loopback only; cluster nodes keep Ray's defaults (they must reach each
                # other). No dashboard: nothing here uses it (trials' placement groups are released by
                # the driver, not by Train's State-API cleaner), and it cost 0.8-1.8 s of the start on
                # 2 cores. To watch a local run in it, start Ray yourself and pass --address auto.
                if fast:
                    from ecg_ray.tuning import _ray_internals

                    with _ray_internals.head_without_cluster_services():
                        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                                 _system_config=_ray_internals.LOCAL_RAY_CONFIG)
                else:  # the dashboard's State API serves Train's placement-group cleaner; loopback only
                    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
                             dashboard_host="127.0.0.1")
            return
        except (OSError, RuntimeError) as err:  # ConnectionError and TimeoutError among them
            ray.shutdown()
            if attempt == RAY_START_ATTEMPTS:
                where = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
                fix = ("Check that the cluster is up (`ray status --address ...`) and that this machine can reach it."
                       if address else "The machine may be overloaded or short of memory, or Ray's ports taken: retry "
                       "when it is less busy, or start Ray yourself (`ray start --head`) and pass --address auto.")
                first_line = (str(err).strip().splitlines() or [""])[0][:300]
                raise EcgRayError(f"Could not {where} after {attempt} attempts ({type(err).__name__}: {first_line}). {fix}") from None
            print(f"[ecg-ray] Ray did not start ({type(err).__name__}); trying again ({attempt + 1}/{RAY_START_ATTEMPTS})", flush=True)
            time.sleep(2 * attempt)


@contextlib.contextmanager
def _environ(**values: str):
    """Set environment variables for the duration of the block, then put back what was there."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a host:port cluster address does not answer.

    ray.init keeps retrying a GCS that is not there for many minutes; a TCP connect tells at once.
    """
    host, sep, port = address.rpartition(":")
    if not sep or address.startswith("ray://") or not port.isdigit():
        return  # 'auto', ray:// client addresses: Ray's own lookup answers quickly
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
        pass


def resolve_use_gpu(cfg: ExperimentConfig) -> bool:
    """resources.use_gpu: 'auto' means a GPU per worker when the cluster has GPUs right now."""
    if cfg.resources.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(cfg.resources.use_gpu)


def _worker_resources(cfg: ExperimentConfig, use_gpu: bool, gpus: float = 1.0) -> dict:
    res = {"CPU": cfg.resources.cpus_per_worker, **cfg.resources.custom_resources_per_worker}
    if use_gpu:
        res["GPU"] = gpus
    return res


def gpu_share(cfg: ExperimentConfig, data: PreparedData) -> tuple[float, str]:
    """(resources.gpus_per_worker, why): the number set, or for 'auto' the packing that fits
    this experiment's trials on the cluster's GPUs (ecg_ray.tuning.packing)."""
    if cfg.resources.gpus_per_worker != "auto":
        return float(cfg.resources.gpus_per_worker), "resources.gpus_per_worker"
    from ecg_ray.tuning.packing import gpu_fraction, gpu_memory_gib, trial_memory_gib, trials_per_gpu

    gib, source = gpu_memory_gib(ray.cluster_resources())
    largest = cfg.search_space.largest
    whole = data.whole["train"].nbytes if data.whole is not None else 0  # a random-crop trial holds it too
    per_trial = trial_memory_gib(
        data.x["train"].nbytes + data.y["train"].nbytes + whole, data.x["val"].nbytes + data.y["val"].nbytes,
        largest("hidden_size"), largest("batch_size"), target_length=max(cfg.data.target_length, largest("target_length")),
    )
    n = trials_per_gpu(gib, per_trial)
    return gpu_fraction(n), f"auto: {n} trial(s) per GPU ({gib:.0f} GiB from {source}; about {per_trial:.1f} GiB per trial)"


# What a trial's Tune driver holds instead of a CPU when resources.cpus_per_trial_driver is 0: it
# only waits on its Train run, and Tune refuses a trial that asks for nothing at all.
DRIVER_MEMORY = 256 * 2**20


def driver_resources(cfg: ExperimentConfig) -> dict:
    return {"CPU": cfg.resources.cpus_per_trial_driver, "memory": DRIVER_MEMORY}


def tune_search(trials: dict[str, TrialConfig], max_concurrent: int = 0) -> tuple[dict, BasicVariantGenerator]:
    """Tune's (param_space, search_alg) that run exactly `trials`, each once, under its trial key.

    Every key of the space is a choice over the values the points use, and the points pin
    each trial; max_concurrent goes to the generator (Tune ignores max_concurrent_trials there).
    """
    points = [{TRIAL_KEY: key, **dataclasses.asdict(trial)} for key, trial in trials.items()]
    space = {name: ray.tune.choice(sorted({p[name] for p in points}, key=repr)) for name in points[0]}
    return space, BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent)


# --- what runs inside Tune ---------------------------------------------------------------------


class EpochPrinter(ray.tune.Callback):
    """The driver's view of each trial as Tune reports it: a line per finished epoch and per trial
    that ends, fails or is retried; its results copied to the experiment folder as they come; its
    status in trial_status.json; the placement group of a trial that ended, released (with
    `reuse_workers`: unless its Tune actor, still alive, winds the run down itself; what a Tune
    actor that died later held, the next trial to need a slot frees). `release`: the fast path's
    release_placement_group; on the public path Ray Train's own cleaner frees each run's group."""

    def __init__(self, exp: ExperimentDir, n_trials: int, reuse_workers: bool = False, release=None):
        self.exp = exp
        self.n_trials = n_trials  # this run's, all of them (Tune creates its trials as it goes)
        self.reuse_workers = reuse_workers
        self.release = release or (lambda trial_key, unless_owner_alive=False: None)
        self.ended: set[str] = set()
        self.warming: threading.Thread | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Live, one line per epoch in progress.jsonl (local folders) and on the console.
        if not self.exp.is_uri:
            self._persist_results(trial)
        c = trial.config
        self.exp.append_progress({"trial_id": c[TRIAL_KEY], "time": time.time(), **{k: result.get(k) for k in PROGRESS_KEYS}})
        print(
            f"[ecg-ray] {c[TRIAL_KEY]} lr={c.get('lr')} H={c.get('hidden_size')} dropout={c.get('dropout')} "
            f"{c.get('optimizer')} seed={c.get('seed')}: epoch {result.get('epoch')}/{c.get('epochs')} "
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
        if ended and len(self.ended) + running >= self.n_trials and self.warming is None:
            # No trial is left to start, so the slot this one held stays idle: import what the
            # report needs (torch for best_model.pt, matplotlib for the figures: 1.5 s of a CPU
            # on 2 cores) now, while the last trials train, not after them.
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


REPORT_MODULES = ("torch", "ecg_ray.results.figures")  # what the report imports that the run did not


def _import_report_modules() -> None:
    for name in REPORT_MODULES:
        importlib.import_module(name)


# --- the phases -----------------------------------------------------------------------------


def preflight(cfg: ExperimentConfig, resume: bool, overwrite: bool) -> ExperimentDir:
    """The folder's state agrees with --resume / --overwrite."""
    exp = ExperimentDir.for_config(cfg)
    exists = exp.exists()
    if exists and not (resume or overwrite):
        raise ConfigError(
            f"The experiment folder {exp} already holds an experiment. Continue it with "
            f"`ecg-ray tune --resume {exp}`, start over with --overwrite, or choose another --name/--storage."
        )
    if resume and not exists:
        raise ConfigError(f"Nothing to resume: {exp} holds no {EXPERIMENT_FILE}.")
    return exp


def prepare_data(cfg: ExperimentConfig, exp: ExperimentDir, resume: bool, overwrite: bool) -> PreparedData:
    """Prepare the data once. Runs before Ray starts, so bad input never waits for a cluster.

    An old folder is removed (--overwrite) only once the new data is known to be good; a
    resumed experiment must find the data it was run on.
    """
    data = prepare(cfg)  # every data error surfaces here
    if overwrite and not resume and exp.exists():
        exp.remove()
    print(f"[ecg-ray] {data.describe()}", flush=True)
    for skipped in data.meta.skipped:
        print(f"[ecg-ray] skipped {skipped['split']} record {skipped['record']}: {skipped['problem']}", flush=True)
    if data.meta.skipped:
        print(f"[ecg-ray] skipped {len(data.meta.skipped)} bad record(s) (on_bad_record: skip)", flush=True)
    if resume:
        recorded = exp.read_record()["data_hash"]
        if recorded != data.data_hash:
            raise ConfigError(
                f"{exp} was run on data {recorded} but the data now hashes to {data.data_hash}; "
                "resume with the same data source and settings, or start a new experiment."
            )
    return data


def run_settings(cfg: ExperimentConfig, data: PreparedData, local: bool, fast: bool) -> RunSettings:
    """How each trial runs on the cluster Ray is connected to (`local`: a Ray this run started;
    `fast`: on the fast path, ecg_ray.tuning.fast_path)."""
    use_gpu = resolve_use_gpu(cfg)
    gpus = 0.0
    if use_gpu:
        gpus, why = gpu_share(cfg, data)
        print(f"[ecg-ray] {gpus:g} GPU per trial ({why})", flush=True)
    settings = RunSettings(
        use_gpu=use_gpu,
        resources_per_worker=_worker_resources(cfg, use_gpu, gpus),
        threads=cfg.resources.cpus_per_worker,
        data_hash=data.data_hash,
        max_failures=cfg.max_failures,
        worker_start_timeout_s=cfg.resources.worker_start_timeout_s,
        train_env=train_env(cfg, False, local),  # tune() sets it again when trials start ahead
        autoscaler=not local,
        # tune() turns it off when trials start ahead; only the fast path can keep a worker
        reuse_workers=local and fast and cfg.resources.reuse_workers,
        fast_path=fast,
    )
    check_placeable(settings.resources_per_worker, driver_resources(cfg), local)
    return settings


def concurrency(cfg: ExperimentConfig, settings: RunSettings, local: bool) -> int:
    """How many trials run at once: resources.max_concurrent_trials, or on a local Ray as many as fit whole.

    Tune starts a trial's driver whenever its resources are free; with drivers that hold CPUs
    (resources.cpus_per_trial_driver > 0) it could start so many that no Train worker can ever
    start (a deadlock). Counting the driver and the worker together prevents that, and trials
    beyond what fits would only wait. 0 means no limit (clusters: the autoscaler adds nodes).
    """
    if cfg.resources.max_concurrent_trials or not local:
        return cfg.resources.max_concurrent_trials
    total = ray.cluster_resources()
    per_trial = {k: v for k, v in settings.resources_per_worker.items()}
    per_trial["CPU"] = per_trial.get("CPU", 0) + driver_resources(cfg)["CPU"]
    return max(1, int(min(total.get(k, 0) / v for k, v in per_trial.items() if v > 0)))


def plan_concurrency(cfg: ExperimentConfig, settings: RunSettings, local: bool) -> tuple[int, int]:
    """(how many trials train at once, how many more start ahead of a free slot), said on the console."""
    slots = concurrency(cfg, settings, local)
    spare = ray.cluster_resources().get("CPU", 0) - slots * settings.resources_per_worker.get("CPU", 0) if local else 0
    ahead = trials_ahead(cfg, slots, local, spare)
    if slots:
        more = f"; {ahead} more start ahead and take the next free slot" if ahead else ""
        print(f"[ecg-ray] {slots} trial(s) train at once{more}", flush=True)
    return slots, ahead


def trials_ahead(cfg: ExperimentConfig, slots: int, local: bool, spare_cpus: float) -> int:
    """How many trials Tune starts beyond the `slots` that train at once (resources.trials_ahead).

    A trial's start-up is a chain (its Tune actor, which runs Train's controller, then its worker);
    a trial started ahead runs the chain up to its worker while others train, and its worker
    takes the next free slot (its placement group waits for it), so the slot does not sit idle
    for the rest of the chain. 'auto' starts as many as there are CPUs the training trials leave
    idle (`spare_cpus`), at most one per slot: a GPU node where the GPU, not the CPUs, limits the
    trials; none on a CPU-only machine, whose CPUs all train (there, starting trials ahead took
    CPU from the training ones and was slower: benchmarks/speed.py --trials-ahead). Only on a local
    Ray whose trial drivers hold no CPU (else they could hold the CPUs their workers need) and
    without resources.max_concurrent_trials (which says exactly how many run); a cluster already
    starts every trial it can (0 = no limit).
    """
    if not starts_ahead(cfg, local):
        return 0
    if cfg.resources.trials_ahead == "auto":
        return max(0, min(slots, int(spare_cpus)))
    return cfg.resources.trials_ahead


def starts_ahead(cfg: ExperimentConfig, local: bool) -> bool:
    """Whether this run may start trials ahead of a free slot (see trials_ahead)."""
    r = cfg.resources
    return local and not r.max_concurrent_trials and r.cpus_per_trial_driver == 0 and r.trials_ahead != 0


def check_placeable(worker: dict, driver: dict, local: bool) -> None:
    """Refuse trials that no node can ever hold, instead of letting them wait forever.

    On a local Ray (one node) a trial's driver and worker must fit together, and nothing
    will add nodes, so that is an error; on a cluster they may sit on different nodes and
    the autoscaler may add nodes, so it is a warning.
    """
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    together = {k: worker.get(k, 0) + driver.get(k, 0) for k in {*worker, *driver}}
    requests = [("worker and Tune driver", together)] if local else [("worker", worker), ("Tune driver", driver)]
    for what, request in requests:
        if any(all(node.get(k, 0) >= v for k, v in request.items()) for node in nodes):
            continue
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        have = {k: largest.get(k, 0) for k in request}
        if not local:
            print(f"[ecg-ray] each trial's {what} asks for {request} but no node has that much right now "
                  f"(largest: {have}): trials wait until the autoscaler adds such a node", flush=True)
            continue
        raise ConfigError(
            f"Each trial's {what} asks for {request}, but this local Ray has no node with that much (it has {have}), "
            "so no trial could ever start. Use --cpu, lower resources.cpus_per_worker / gpus_per_worker / "
            "custom_resources_per_worker, or pass --num-cpus."
        )


def experiment_record(cfg: ExperimentConfig, data: PreparedData, settings: RunSettings) -> dict:
    """The experiment file's content: config, grid, data hash and metadata, run settings."""
    return {
        "config": cfg.to_dict(),
        # An Optuna search records each batch as it suggests it (ExperimentDir.record_trials).
        "grid": [] if cfg.search_space.adaptive else [dataclasses.asdict(t) for t in cfg.grid()],
        "trial_keys": [] if cfg.search_space.adaptive else list(cfg.trials()),
        "data_hash": data.data_hash,
        "data": data.meta.to_dict(),
        "settings": dataclasses.asdict(settings),
        "metric": RANK_METRIC,
        "created": _now(),
    }


def pending_trials(cfg: ExperimentConfig, exp: ExperimentDir, resume: bool) -> dict[str, TrialConfig]:
    """The trials to run: all of them, or on a resume those trial_status.json does not record as finished.

    A failed trial (ERROR) runs again, from its last checkpoint. An Optuna search starts with
    none: its searcher suggests them (on a resume, it first runs again those recorded unfinished).
    """
    if cfg.search_space.adaptive:
        if not resume:
            return {}
        finished = finished_values(exp)
        return {k: t for k, t in exp.recorded_trials().items() if k not in finished}
    trials = cfg.trials()
    if not resume:
        return trials
    record = exp.read_record()
    recorded = record.get("trial_keys")
    if "grid" in record and [TrialConfig.from_dict(g) for g in record["grid"]] != list(trials.values()):
        raise ConfigError(
            f"The trials of {exp} (its recorded grid or random draws) differ from those its experiment file gives "
            "now, so a resume would run other configs than it started. Start it again with --overwrite."
        )
    if recorded != list(trials):
        raise ConfigError(
            f"{exp} was written by an earlier ecg_ray (its trials have no recorded keys) or its grid no longer "
            "matches its experiment file, so it cannot be resumed safely. Start it again with --overwrite."
        )
    finished = finished_values(exp)
    return {k: t for k, t in trials.items() if k not in finished}


def finished_values(exp: ExperimentDir) -> dict[str, float | None]:
    """Trial key -> best val macro-F1 of every trial trial_status.json records as finished ({} for a
    new experiment)."""
    return {k: v.get("best") for k, v in exp.read_statuses().items() if v.get("status") == "TERMINATED"}


def trials_to_run(cfg: ExperimentConfig, exp: ExperimentDir, pending: dict[str, TrialConfig]) -> int:
    """How many trials this run starts: the pending ones, or for an Optuna search every one not finished."""
    return cfg.n_trials - len(finished_values(exp)) if cfg.search_space.adaptive else len(pending)


def searcher(cfg: ExperimentConfig, exp: ExperimentDir, trials: dict[str, TrialConfig], max_concurrent: int) -> tuple[dict, object]:
    """Tune's (param_space, search_alg) for the `trials` this run starts with."""
    if not cfg.search_space.adaptive:
        return tune_search(trials, max_concurrent)
    from ecg_ray.tuning.optuna_search import BatchedOptuna

    # The experiment file is written by now (a new run's before its first batch: record_trials adds to it).
    return {}, BatchedOptuna(cfg.search_space, cfg.seed, exp, exp.recorded_trials(), finished_values(exp), rerun=list(trials))


def build_tuner(cfg: ExperimentConfig, exp: ExperimentDir, data: PreparedData, settings: RunSettings,
                trials: dict[str, TrialConfig], num_samples: int, max_concurrent: int = 0, tensorboard: bool = False):
    """A Tuner that runs `trials` (a new experiment, or the unfinished trials of a resumed one), and
    for an Optuna search what its searcher suggests, `num_samples` trials in all. `tensorboard`:
    Tune also writes TensorBoard event files in each trial's folder (see only_our_loggers)."""
    internals = None
    if settings.fast_path:
        from ecg_ray.tuning import _ray_internals as internals

        if settings.autoscaler:
            internals.prestart_train_services()
    data_ref = ray.put(data)  # once per experiment; every trial on every node reads this object
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(trial_driver, data_box=[data_ref], exp=exp, settings=settings),
        driver_resources(cfg),
    )
    space, search = searcher(cfg, exp, trials, max_concurrent)
    # Tune's own loggers first: EpochPrinter copies the result.json they have just written.
    loggers = [JsonLoggerCallback(), CSVLoggerCallback(), *([TBXLoggerCallback()] if tensorboard else [])]
    return ray.tune.Tuner(
        trainable,
        param_space=space,
        tune_config=ray.tune.TuneConfig(
            metric=RANK_METRIC,
            mode=RANK_MODE,
            search_alg=search,
            num_samples=num_samples,
            scheduler=build_scheduler(cfg.scheduler, cfg.epochs),
            # A trial's Tune actor (its driver and Train's controller) runs the next trial once this
            # one ends: no new process, no second import of Ray Train (1.0-1.4 s per trial on 2
            # cores). Its worker is still new each trial; Tune starts a fresh actor after a failure.
            reuse_actors=True,
        ),
        run_config=ray.tune.RunConfig(
            name=exp.name,
            storage_path=exp.storage_root,
            failure_config=ray.tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[*loggers, EpochPrinter(exp, num_samples, settings.reuse_workers, internals and internals.release_placement_group)],
            verbose=0,  # EpochPrinter says what happens, a line at a time
        ),
    )


def only_our_loggers():
    """While Tune runs: no logger that build_tuner did not pass. Tune adds a TensorBoard logger of
    its own, whose tensorboardX imports torch in this process as the first trials start (1.0-1.4 s
    of a CPU on a 2-core machine, and torch with CUDA on a GPU node) for event files that the
    report does not read; `--tensorboard` asks for them."""
    return _environ(**{TUNE_AUTO_LOGGERS_ENV: "1"})


@contextlib.contextmanager
def graceful_stop():
    """Turn Ctrl-C and SIGTERM into Tune's graceful stop; yields an Event set when that happened.

    Tune stops on SIGUSR1 the way it does on Ctrl-C (it saves the experiment state once
    more). Going through our own handler tells us afterwards that the run was cut short;
    a second Ctrl-C stops at once. Signals reach the main thread only.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop_gracefully(sig, frame):
        interrupted.set()
        for s in previous:
            signal.signal(s, previous[s])
        os.kill(os.getpid(), signal.SIGUSR1)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in previous:
        signal.signal(sig, stop_gracefully)
    try:
        yield interrupted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def finish(grid, exp: ExperimentDir, interrupted: bool) -> str:
    """Release the autoscaler's requests, then record final statuses (or report the interruption)."""
    _release_autoscaler_requests()
    if interrupted:
        # Tune marks the trials it stopped as terminated in memory; trial_status.json keeps
        # what the callback saw end, and --resume continues the rest.
        raise ExperimentInterrupted(exp.path)
    _record_statuses(grid, exp)
    return exp.path


def tune(
    cfg: ExperimentConfig,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    tensorboard: bool = False,
) -> str:
    """Check storage, prepare the data once, then start Ray and tune every grid point (the Ray
    part of ecg_ray.pipeline.run_experiment, which then writes the best model and the report).

    Args:
        cfg: the experiment.
        resume: continue the experiment in its experiment folder (finished trials are kept).
        overwrite: allowed to start over in an existing experiment folder.
        address, num_cpus: passed to init_ray (ignored when Ray is already initialised).
        tensorboard: Tune also writes TensorBoard event files (`ecg-ray tune --tensorboard`).

    Returns:
        The experiment folder (a local path or a URI).
    """
    folder = ExperimentDir.for_config(cfg)
    check_writable(folder.storage_root)  # before anything else, and before the lock file is made there
    with folder.lock():  # one writer per experiment folder, from here to the end
        try:
            exp = preflight(cfg, resume, overwrite)
            path = fast_path.choose(cfg.resources.fast_path)  # a refused fast_path: true, before any data is read
            trials = pending_trials(cfg, exp, resume)
            data = prepare_data(cfg, exp, resume, overwrite)
            to_run = trials_to_run(cfg, exp, trials)
            if not to_run:
                print(f"[ecg-ray] every trial of {exp} has finished; nothing to resume", flush=True)
                return exp.path
            _wait_for_ray_to_stop()  # the last run's local Ray (a second run in this process)
            local = not (address or os.environ.get("RAY_ADDRESS")) and not ray.is_initialized()
            print(f"[ecg-ray] {path.why}", flush=True)
            init_ray(address, num_cpus, path.fast)  # only now: bad input never waits for a cluster
            settings = run_settings(cfg, data, local, path.fast)
        except KeyboardInterrupt:
            raise ExperimentInterrupted(folder.path, started=resume) from None
        slots, ahead = plan_concurrency(cfg, settings, local)
        if ahead:  # their placement groups wait for a free slot as long as other trials train
            # and a worker kept idle by its Tune actor would hold the slot an ahead trial waits for
            settings = dataclasses.replace(settings, train_env=train_env(cfg, True, local), reuse_workers=False)
        if not resume:
            exp.write_record(experiment_record(cfg, data, settings), {"data_hash": data.data_hash, "ids": data.ids})
        run = run_record(resume, to_run, address) | {"concurrent_trials": slots, "trials_ahead": ahead}
        t0 = time.monotonic()
        exp.record_run(run)
        tuner = build_tuner(cfg, exp, data, settings, trials, to_run, slots + ahead, tensorboard)
        with graceful_stop() as interrupted, only_our_loggers():
            grid = tuner.fit()
        exp.record_run(run | {"ended": _now(), "wall_s": round(time.monotonic() - t0, 3),
                              "interrupted": interrupted.is_set()})
        path = finish(grid, exp, interrupted.is_set())
        if local:  # this command started Ray and needs it no more: it stops while the report is written
            _stop_ray_in_background()
        return path


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_record(resume: bool, n_trials: int, address: str | None) -> dict:
    """What the report's provenance says of one run: when, on what cluster, with which versions."""
    resources = ray.cluster_resources()
    return {
        "started": _now(), "ended": None, "wall_s": None, "resume": resume, "trials": n_trials,
        "cluster": "local" if not (address or os.environ.get("RAY_ADDRESS")) else "remote",
        "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
        "cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0),
        "versions": provenance.library_versions(), "git_commit": provenance.git_commit(), "host": socket.gethostname(),
    }


class ExperimentInterrupted(EcgRayError):
    """The driver was stopped (Ctrl-C, SIGTERM); the experiment can be resumed."""

    def __init__(self, exp_path: str, started: bool = True):
        if started:
            text = f"Stopped. Finished trials and checkpoints are kept; continue with: ecg-ray tune --resume {exp_path}"
        else:
            text = f"Stopped before any trial started; nothing was written to {exp_path}. Run the same command again to start."
        super().__init__(text)
        self.exp_path = exp_path


def _release_autoscaler_requests() -> None:
    """Let the autoscaler remove idle GPU nodes as soon as the experiment ends.

    Each Train run asks Ray's AutoscalingCoordinator actor for its worker's resources.
    That request can outlive the run by minutes, and the detached actor itself lives
    on the node of the first trial, so that node is never idle (ray-project/ray#58481).
    Ending the actor and clearing the standing request lets idle nodes go; the next
    Train run creates a fresh coordinator.
    """
    try:
        coordinator = ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
    except ValueError:
        return  # no Train run asked for resources through it
    ray.kill(coordinator, no_restart=True)
    ray.autoscaler.sdk.request_resources(bundles=[])


def _record_statuses(grid, exp: ExperimentDir) -> None:
    """Write the final status of every trial this run ran to trial_status.json.

    The callback records statuses as trials end, which survives a killed driver; this
    pass after a fit() that was not interrupted is the authoritative one: every trial
    of it has ended, in an error or not.
    """
    exp.update_statuses({
        r.config[TRIAL_KEY]: {"status": "ERROR" if r.error else "TERMINATED", "last_epoch": (r.metrics or {}).get("epoch")}
        for r in grid
    })


def unfinished_trials(cfg: ExperimentConfig) -> tuple[int, int]:
    """(trials that have not ended, trials that ended in an error) according to trial_status.json."""
    status = ExperimentDir.for_config(cfg).read_statuses()
    ended = [v["status"] for v in status.values() if v["status"] in ("TERMINATED", "ERROR")]
    return cfg.n_trials - len(ended), ended.count("ERROR")
