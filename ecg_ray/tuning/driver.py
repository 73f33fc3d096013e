"""The Tune driver: one deterministic trial per grid point, each a one-worker Ray Train run.

    ecg-ray tune experiments/quick.yaml

`tune` reads as four phases: preflight (storage, folder state),
prepare (data, before Ray starts), fit (Tune, with Ctrl-C/SIGTERM turned into a
graceful stop) and finish (statuses, autoscaler clean-up). What the folder
holds is ecg_ray.results.store.folder's; what each trial runs is ecg_ray.tuning.trial.

Tune is given the trials as explicit points, each under its stable trial key.
A resume is a new Tune run over the trials that have not finished, rebuilt from
ecg_ray's own JSON (the experiment file, trial_status.json) and Train's JSON
checkpoint index: Tune's pickled state (tuner.pkl, experiment_state) in a
folder is never read, so nothing in storage runs as code on the resuming machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import threading
import time

import ray
import ray.tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.search.basic_variant import BasicVariantGenerator

from ecg_ray import storage
from ecg_ray import provenance
from ecg_ray.config import ExperimentConfig, RunSettings, TrialConfig, experiment_from_dict
from ecg_ray.data import trust
from ecg_ray.environ import environ
from ecg_ray.data.prepare import PreparedData, prepare
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.results.store.folder import EXPERIMENT_FILE, ExperimentDir, check_writable
from ecg_ray.results.store.state import FolderState
from ecg_ray.tuning.schedulers import ConfigGroups, build_scheduler
from ecg_ray.schema import RANK_METRIC, RANK_MODE, TRIAL_KEY
from ecg_ray.tuning import fast_path
from ecg_ray.tuning.progress import EpochPrinter
from ecg_ray.tuning.ray_session import _stop_ray_in_background, _wait_for_ray_to_stop, init_ray
from ecg_ray.tuning.resources import driver_resources, plan_concurrency, run_settings
from ecg_ray.tuning.trial import train_env, trial_driver

TUNE_AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"  # Tune's switch for the loggers it adds itself


def _live_runs(cfg: ExperimentConfig, exp: ExperimentDir):
    """Each epoch to MLflow as it comes, where the experiment asks for MLflow (None otherwise)."""
    if not cfg.tracking.mlflow_uri:
        return None
    from ecg_ray.results.integrations.tracking import LiveRuns

    return LiveRuns(exp.path, cfg.tracking.mlflow_uri, cfg.tracking.mlflow_experiment or cfg.name)


def tune_search(trials: dict[str, TrialConfig], max_concurrent: int = 0) -> tuple[dict, BasicVariantGenerator]:
    """Tune's (param_space, search_alg) that run exactly `trials`, each once, under its trial key.

    Every key of the space is a choice over the values the points use, and the points pin
    each trial; max_concurrent goes to the generator (Tune ignores max_concurrent_trials there).
    """
    points = [{TRIAL_KEY: key, **dataclasses.asdict(trial)} for key, trial in trials.items()]
    space = {name: ray.tune.choice(sorted({p[name] for p in points}, key=repr)) for name in points[0]}
    return space, BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent)


# --- the phases -----------------------------------------------------------------------------


def preflight(cfg: ExperimentConfig, resume: bool, overwrite: bool, extend: bool = False,
              state: FolderState | None = None) -> FolderState:
    """The folder, read once (or `state`, already read by the command), agrees with --resume /
    --overwrite / --extend; every later phase reads it from the state returned."""
    exp = state if state is not None and state.path == ExperimentDir.for_config(cfg).path else \
        FolderState.load(ExperimentDir.for_config(cfg))
    exists = exp.exists()
    if extend and not exists:
        from ecg_ray.results.store.folder import not_an_experiment

        raise ConfigError(f"Nothing to extend: {exp} is not an experiment folder ({not_an_experiment(exp.path)}); or run "
                          "the file without --extend to start it.")
    resume = resume or extend  # what follows holds for both: the folder is written to again
    if exists and not (resume or overwrite):
        raise ConfigError(
            f"The experiment folder {exp} already holds an experiment. Continue it with "
            f"`ecg-ray tune --resume {exp}`, start over with --overwrite, or choose another --name/--storage."
        )
    if resume and not exists:
        raise ConfigError(f"Nothing to resume: {exp} holds no {EXPERIMENT_FILE}.")
    if resume:  # before Ray starts: a resume writes statuses, progress and checkpoints here
        for folder in (exp.path, exp.train_runs):
            if not storage.writable(folder):
                raise ConfigError(f"{folder} is not writable, and a resume writes there (statuses, progress, "
                                  f"checkpoints). Make it writable (`chmod -R u+w {exp.path}`), or copy the folder "
                                  "somewhere writable and resume the copy.")
    return exp


def prepare_data(cfg: ExperimentConfig, exp: ExperimentDir, resume: bool, overwrite: bool) -> PreparedData:
    """Prepare the data once. Runs before Ray starts, so bad input never waits for a cluster.

    An old folder is removed (--overwrite) only once the new data is known to be good; a
    resumed experiment must find the data it was run on.
    """
    print(f"[ecg-ray] preparing the data ({cfg.data.source}); a cache of it is reused next time", flush=True)
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
                "continue it (--resume, --extend) with the same data source and settings, or start a new experiment."
            )
    return data


def experiment_record(cfg: ExperimentConfig, data: PreparedData, settings: RunSettings) -> dict:
    """The experiment file's content: config, grid, data hash and metadata, run settings."""
    return {
        "config": cfg.to_dict(),
        # An Optuna search records each batch as it suggests it (ExperimentDir.record_trials).
        "grid": [] if cfg.search_space.adaptive else [dataclasses.asdict(t) for t in cfg.grid()],
        "trial_keys": [] if cfg.search_space.adaptive else list(cfg.trials()),
        "data_hash": data.data_hash,
        "data": data.meta.to_dict(),
        "pickles": trust.record(trust.pickle_paths(cfg.data)),  # checked on a resume, a rerun, a repeat
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
    if record.get("extended") and len(recorded) == len(trials):
        trials = dict(zip(recorded, trials.values()))  # an extension's keys: the old trials kept theirs
    if recorded != list(trials):
        raise ConfigError(
            f"{exp} was written by an earlier ecg_ray (its trials have no recorded keys) or its grid no longer "
            "matches its experiment file, so it cannot be resumed safely. Start it again with --overwrite."
        )
    finished = finished_values(exp)
    return {k: t for k, t in trials.items() if k not in finished}


def extension_trials(cfg: ExperimentConfig, exp: ExperimentDir) -> tuple[dict[str, TrialConfig], dict[str, TrialConfig]]:
    """(every trial of the extended experiment under its key, those to run: not finished) for
    `ecg-ray tune FILE --extend DIR`; an edit that makes the folder's trials incomparable is refused
    here, before any data is read (ecg_ray.config.extension)."""
    from ecg_ray.config.extension import check_settings, keyed_trials

    old = exp.recorded_trials()
    finished = finished_values(exp)
    if finished and not set(finished) <= set(old):
        raise ConfigError(f"{exp} was written by an earlier ecg_ray (its trials have no recorded keys), so it cannot be "
                          "extended safely. Run the edited file as a new experiment (another --name).")
    raw = exp.read_record()["config"]  # to compare with, nothing read through it (trust is the file's word)
    check_settings(experiment_from_dict({**raw, "data": {**raw.get("data", {}), "trust_pickle": True}}, exp.experiment_file),
                   cfg, str(exp))
    if cfg.search_space.adaptive:  # the study's suggestions so far; its sampler suggests the rest
        return old, {k: t for k, t in old.items() if k not in finished}
    trials = keyed_trials(old, cfg.grid(), str(exp))
    return trials, {k: t for k, t in trials.items() if k not in finished}


def extended_record(cfg: ExperimentConfig, exp: ExperimentDir, data: PreparedData, settings: RunSettings,
                    trials: dict[str, TrialConfig]) -> dict:
    """The experiment file of an extended experiment: the edited config and every trial under its
    key, what it was created as and each extension."""
    old = exp.read_record()
    record = experiment_record(cfg, data, settings) | {"created": old.get("created")}
    if not cfg.search_space.adaptive:
        record |= {"grid": [dataclasses.asdict(t) for t in trials.values()], "trial_keys": list(trials)}
    else:
        record |= {"grid": old.get("grid", []), "trial_keys": old.get("trial_keys", [])}
    extension = {"at": _now(), "trials_before": len(old.get("trial_keys", [])), "trials_after": cfg.n_trials}
    return record | {"extended": [*old.get("extended", []), extension]}


def check_split(exp: ExperimentDir, data: PreparedData) -> None:
    """The data splits (or folds) an extension's new trials get are the ones the folder's trials had."""
    recorded = exp.read_splits().get("ids", {})
    if {k: list(v) for k, v in recorded.items()} != {k: list(v) for k, v in data.ids.items()}:
        differ = sorted(k for k in set(recorded) | set(data.ids) if list(recorded.get(k, [])) != list(data.ids.get(k, [])))
        raise ConfigError(f"Cannot extend {exp}: the data now splits into other records ({', '.join(differ)} differ from "
                          f"{exp.splits_file}), so its trials and the new ones would not be comparable. Extend it with "
                          "the data and split it was run on, or run the edited file as a new experiment (another --name).")


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
    from ecg_ray.tuning.searchers import BatchedSearcher  # search.algorithm names the searcher it wraps

    # The experiment file is written by now (a new run's before its first batch: record_trials adds to it).
    return {}, BatchedSearcher(cfg.search_space, cfg.seed, exp, exp.recorded_trials(), finished_values(exp), rerun=list(trials))


def config_groups(cfg: ExperimentConfig, exp: ExperimentDir, trials: dict[str, TrialConfig]) -> ConfigGroups | None:
    """What grouped ASHA starts from (None where ASHA is per trial): every trial of the experiment
    and, on a resume, what its finished trials reported (they do not run again)."""
    if not cfg.groups_trials:
        return None
    from ecg_ray.results.tables.history import history

    known = {**exp.recorded_trials(), **trials}
    hist = history(exp, [])
    scores: dict[str, dict[int, float]] = {}
    for key, epoch, value in zip(hist["trial_id"], hist["epoch"], hist[RANK_METRIC]):
        scores.setdefault(str(key), {})[int(epoch)] = float(value)
    failed = {k for k, st in exp.read_statuses().items() if st.get("status") == "ERROR" and k not in trials}
    return ConfigGroups({k: {TRIAL_KEY: k, **dataclasses.asdict(t)} for k, t in known.items()}, cfg.replicates, scores, failed)


def build_tuner(cfg: ExperimentConfig, exp: ExperimentDir, data: PreparedData, settings: RunSettings,
                trials: dict[str, TrialConfig], num_samples: int, max_concurrent: int = 0, tensorboard: bool = False):
    """A Tuner that runs `trials` (a new experiment, or the unfinished trials of a resumed one), and
    for an Optuna search what its searcher suggests, `num_samples` trials in all. `tensorboard`:
    Tune also writes TensorBoard event files in each trial's folder (see only_our_loggers)."""
    if settings.fast_path and settings.autoscaler:
        fast_path.prestart_train_services()
    data_ref = ray.put(data)  # once per experiment; every trial on every node reads this object
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(trial_driver, data_box=[data_ref], exp=exp.folder, settings=settings),
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
            scheduler=build_scheduler(cfg.scheduler, cfg.epochs, config_groups(cfg, exp, trials)),
            # A trial's Tune actor (its driver and Train's controller) runs the next trial once this
            # one ends: no new process, no second import of Ray Train (1.0-1.4 s per trial on 2
            # cores). Its worker is still new each trial; Tune starts a fresh actor after a failure.
            reuse_actors=True,
        ),
        run_config=ray.tune.RunConfig(
            name=exp.name,
            storage_path=exp.storage_root,
            failure_config=ray.tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[*loggers, EpochPrinter(exp, num_samples, settings.reuse_workers, fast_path.placement_group_release() if settings.fast_path else None,
                                              _live_runs(cfg, exp))],
            verbose=0,  # EpochPrinter says what happens, a line at a time
        ),
    )


def only_our_loggers():
    """While Tune runs: no logger that build_tuner did not pass. Tune adds a TensorBoard logger of
    its own, whose tensorboardX imports torch in this process as the first trials start (1.0-1.4 s
    of a CPU on a 2-core machine, and torch with CUDA on a GPU node) for event files that the
    report does not read; `--tensorboard` asks for them."""
    return environ(**{TUNE_AUTO_LOGGERS_ENV: "1"})


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
    full = [r.config[TRIAL_KEY] for r in grid if r.error and no_space(r.error)]
    if full:
        print(f"[ecg-ray] {len(full)} trial(s) failed because the storage ran out of space ({', '.join(full)}): "
              f"{_NO_SPACE_FIX.format(exp=exp.path)}", flush=True)
    return exp.path


_NO_SPACE_FIX = ("free space (checkpoints live in {exp}/train_runs), then continue with `ecg-ray tune --resume {exp}`: "
                 "finished trials are kept, a checkpoint cut short is left out and its trial starts again")


def no_space(err: BaseException) -> bool:
    """Whether `err`, or anything in its chain or its text (a Ray error carries the worker's), is a full disk."""
    import errno

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def _no_space_is_said(exp: ExperimentDir):
    """A full disk during the run ends in one line that says so, not Tune's traceback."""
    try:
        yield
    except Exception as err:
        if no_space(err):
            raise EcgRayError(f"The storage ran out of space during the run (No space left on device): "
                              f"{_NO_SPACE_FIX.format(exp=exp.path)}.") from None
        raise


def tune(
    cfg: ExperimentConfig,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    tensorboard: bool = False,
    extend: bool = False,
    state: FolderState | None = None,
) -> "Tuned":
    """Check storage, prepare the data once, then start Ray and tune every grid point (the Ray
    part of ecg_ray.pipeline.run_experiment, which then writes the best model and the report).

    Args:
        cfg: the experiment.
        resume: continue the experiment in its experiment folder (finished trials are kept).
        overwrite: allowed to start over in an existing experiment folder.
        address, num_cpus: passed to init_ray (ignored when Ray is already initialised).
        tensorboard: Tune also writes TensorBoard event files (`ecg-ray tune --tensorboard`).
        extend: `cfg` is an edited file for the experiment already in its folder: run only the trials
            it adds (ecg_ray.config.extension says which edits are refused).
        state: the folder as the command already read it (a resume reads its config from it).

    Returns:
        Tuned: the folder's state after the run (read once, then kept current by every write of
        this run) and the data prepared for it.
    """
    if extend and (resume or overwrite):
        raise ConfigError("--extend runs an edited experiment file's new trials in an existing folder: pass it without "
                          "--resume (which continues the folder's own file) and --overwrite (which starts over).")
    folder = ExperimentDir.for_config(cfg)
    made = check_writable(folder.storage_root)  # before anything else, and before the lock file is made there
    with folder.lock(made):  # one writer per experiment folder, from here to the end
        try:
            exp = preflight(cfg, resume, overwrite, extend, state)
            path = fast_path.choose(cfg.resources.fast_path)  # a refused fast_path: true, before any data is read
            keyed, trials = extension_trials(cfg, exp) if extend else (None, pending_trials(cfg, exp, resume))
            data = prepare_data(cfg, exp, resume or extend, overwrite)
            if extend:
                check_split(exp, data)
            to_run = trials_to_run(cfg, exp, trials)
            if not to_run:
                print(f"[ecg-ray] every trial of {exp} has finished; nothing to "
                      f"{'run: the file adds no trial to it' if extend else 'resume'}", flush=True)
                return Tuned(exp, data)
            _wait_for_ray_to_stop()  # the last run's local Ray (a second run in this process)
            local = not (address or os.environ.get("RAY_ADDRESS")) and not ray.is_initialized()
            print(f"[ecg-ray] {path.why}", flush=True)
            init_ray(address, num_cpus, path.fast)  # only now: bad input never waits for a cluster
            settings = run_settings(cfg, data, local, path.fast)
        except KeyboardInterrupt:
            raise ExperimentInterrupted(folder.path, started=resume or extend) from None
        slots, ahead = plan_concurrency(cfg, settings, local)
        if ahead:  # their placement groups wait for a free slot as long as other trials train
            # and a worker kept idle by its Tune actor would hold the slot an ahead trial waits for
            settings = dataclasses.replace(settings, train_env=train_env(cfg, True, local), reuse_workers=False)
        if extend:  # from here a --resume continues the extended experiment
            exp.write_record(extended_record(cfg, exp, data, settings, keyed), exp.read_splits())
            print(f"[ecg-ray] extending {exp}: {len(finished_values(exp))} finished trial(s) kept, {to_run} to run", flush=True)
        elif not resume:
            exp.write_record(experiment_record(cfg, data, settings), {"data_hash": data.data_hash, "ids": data.ids})
        run = run_record(resume, to_run, address) | {"concurrent_trials": slots, "trials_ahead": ahead, "extend": extend}
        t0 = time.monotonic()
        exp.record_run(run)
        tuner = build_tuner(cfg, exp, data, settings, trials, to_run, slots + ahead, tensorboard)
        with graceful_stop() as interrupted, only_our_loggers(), _no_space_is_said(exp):
            grid = tuner.fit()
        exp.record_run(run | {"ended": _now(), "wall_s": round(time.monotonic() - t0, 3),
                              "interrupted": interrupted.is_set()})
        finish(grid, exp, interrupted.is_set())
        if local:  # this command started Ray and needs it no more: it stops while the report is written
            _stop_ray_in_background()
        return Tuned(exp, data)


@dataclasses.dataclass
class Tuned:
    """What `tune` hands to the phases after it: the folder's state after the run and the prepared data."""

    state: FolderState
    data: PreparedData

    @property
    def path(self) -> str:
        return self.state.path

    def unfinished(self, n_trials: int) -> tuple[int, int]:
        """(trials that have not ended, trials that ended in an error) according to the trial statuses."""
        ended = [v["status"] for v in self.state.read_statuses().values() if v["status"] in ("TERMINATED", "ERROR")]
        return n_trials - len(ended), ended.count("ERROR")


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
    """Let the autoscaler remove idle GPU nodes as soon as the experiment ends: Ray Train's
    autoscaling coordinator keeps the node of the first trial busy and its resource request
    standing (ray-project/ray#58481); on a tested Ray it is ended here
    (ecg_ray.tuning._ray_internals.release_autoscaling_coordinator), elsewhere the autoscaler
    waits for Ray to let them go."""
    fast_path.release_autoscaling_coordinator()


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
