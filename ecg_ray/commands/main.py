"""The `ecg-ray` command line.

    ecg-ray tune experiments/quick.yaml                 # local Ray, prints the ranked table
    ecg-ray tune experiments/seed_grid.yaml --address auto --data /data/training2017
    ecg-ray tune --resume ~/ecg_ray_results/quick        # continue an interrupted experiment
    ecg-ray report ~/ecg_ray_results/quick --format csv markdown latex
    ecg-ray data check ../shared/data/cinc2017-sample
    ecg-ray data convert train_df.pkl train.parquet --trust-pickle train_df.pkl
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ecg_ray.config import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS
from ecg_ray.errors import EcgRayError


def _data_overrides(args) -> dict:
    """--data / --val-data / --trust-pickle as config overrides: a source name, a folder or a file."""
    from ecg_ray.data.sources import guess_source

    out = {"data.trust_pickle": True} if getattr(args, "trust_pickle", None) else {}
    if getattr(args, "test_data", None):
        out["data.test_path"] = os.path.abspath(args.test_data)
    if not args.data:
        return out
    source = guess_source(args.data)
    out["data.source"] = source
    if source != args.data:
        out["data.path"] = os.path.abspath(args.data)
    if getattr(args, "val_data", None):
        out["data.val_path"] = os.path.abspath(args.val_data)
    return out


def _warn_about_pickles(cfg) -> None:
    from ecg_ray.data.sources import PICKLE_WARNING

    if cfg.data.source == "pickle":
        print(f"[ecg-ray] warning: {PICKLE_WARNING}", flush=True)


# Ray's switch for a one-machine cluster: its node IP is then loopback, and every Ray process
# (GCS, raylet, workers, agents) listens on 127.0.0.1 only. Read when `ray` is imported, and
# it stops other machines from joining: set only for a local run, before Ray is imported.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _loopback_if_local(args) -> None:
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        for key, value in LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)


def cmd_tune(args) -> int:
    _loopback_if_local(args)  # before anything imports Ray
    from ecg_ray.config import load_experiment
    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.results.store.state import FolderState

    state = None
    if args.resume and args.experiment:
        raise EcgRayError(f"Pass an experiment file ({args.experiment}) or --resume {args.resume}, not both: a resume "
                          "runs the experiment its folder records, so the file would be ignored. To run the file, "
                          "drop --resume (with --overwrite or another --name to start a new folder).")
    if args.extend and (args.resume or args.overwrite or args.storage or args.name):
        given = [f for f, v in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--storage", args.storage),
                                ("--name", args.name)) if v]
        raise EcgRayError(f"--extend {args.extend} names the folder to extend, so {' and '.join(given)} cannot be given with "
                          "it (--resume continues a folder with its own file, --overwrite starts over; the folder says "
                          "where results go).")
    if args.extend and not args.experiment:
        raise EcgRayError(f"--extend {args.extend} takes the edited experiment file: ecg-ray tune FILE --extend {args.extend}.")
    if args.resume:
        # The folder may have moved since: it is the source of truth for where results go. It
        # is not trusted to allow pickles: a copied folder could name one; that takes the flag.
        state = FolderState.load(ExperimentDir.parse(args.resume))  # read once: the driver goes on from this state
        cfg = state.read_config(trust_pickle=args.trust_pickle)
    else:
        if not args.experiment:
            raise EcgRayError("Pass an experiment file (e.g. experiments/quick.yaml) or --resume EXPERIMENT_DIR.")
        overrides = _data_overrides(args)
        if args.extend:  # the folder, wherever it is now, is where the trials go
            folder = ExperimentDir.parse(args.extend)
            overrides |= {"storage_path": folder.storage_root, "name": folder.name}
        if args.storage:
            overrides["storage_path"] = args.storage
        if args.name:
            overrides["name"] = args.name
        if args.gpu is not None:
            overrides["resources.use_gpu"] = args.gpu
        cfg = _trusted(load_experiment(args.experiment, **overrides), args)
    return _run(cfg, args, resume=bool(args.resume), extend=bool(args.extend), state=state)


def _trusted(cfg, args):
    """`cfg`, once every pickle it reads is one --trust-pickle names (when the flag is given at all)."""
    from ecg_ray.data.trust import check_named, pickle_paths

    if args.trust_pickle:
        where = f"The experiment {args.experiment}" if getattr(args, "experiment", None) else "This command"
        check_named(pickle_paths(cfg.data), args.trust_pickle, where)
    return cfg


def cmd_repeat(args) -> int:
    _loopback_if_local(args)
    from ecg_ray.commands.repeat import repeat_config

    cfg = repeat_config(args.experiment_dir, args.top, args.seeds, args.name, args.storage, args.trust_pickle, args.folds)
    print(f"[ecg-ray] the top {args.top} config(s) of {cfg.origin['experiment']} at seeds {cfg.seeds}"
          + (f", {args.folds}-fold cross-validated" if args.folds else "") + ": "
          f"trials {', '.join(cfg.origin['trial_ids'])} there", flush=True)
    return _run(cfg, args, resume=False)


def _run(cfg, args, resume: bool, extend: bool = False, state=None) -> int:
    """Run an experiment (ecg_ray.pipeline), then print its tables; the exit status says what is left to do."""
    from ecg_ray.pipeline import run_experiment
    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.results.tables.columns import TEST_SUMMARY_COLUMNS, with_varying_knobs
    from ecg_ray.results.page.console import summary_text
    from ecg_ray.results.tables.export import to_markdown
    from ecg_ray.tuning.driver import ExperimentInterrupted

    _warn_about_pickles(cfg)
    cfg = _with_mlflow(cfg, getattr(args, "mlflow", None))
    print(f"[ecg-ray] experiment {cfg.name}: {cfg.n_trials} trial(s) -> {ExperimentDir.for_config(cfg)}", flush=True)
    try:
        out = run_experiment(cfg, resume, args.overwrite, args.address, args.num_cpus, args.tensorboard, args.format, extend,
                             state)
    except ExperimentInterrupted as stop:
        print(f"ecg-ray: {stop}", file=sys.stderr)
        return 130
    _warn(out.problems + out.notes)
    if out.trials is not None:
        trials, test = out.trials, out.test
        print(f"\nRanked by best validation macro-F1 ({len(trials)} trials, data {trials['data_hash'].iloc[0]}):\n")
        print(summary_text(trials))
        if test is not None:
            print(f"\nHeld-out test split ({test['n_test'].iloc[0]} records, never used for selection), "
                  "95% bootstrap CIs over records:\n")
            print(to_markdown(test[with_varying_knobs(TEST_SUMMARY_COLUMNS, test)]))
        print("Tables and figures: " + ", ".join(str(p) for p in out.written))
        if out.best_model:
            kind = (f"the ensemble of the best config's {out.best_members} trials; its best trial alone: "
                    f"{ExperimentDir.parse(out.path).best_trial_model}; ") if out.best_members > 1 else ""
            print(f"Best model: {out.best_model} ({kind}use it with `ecg-ray predict {out.best_model} INPUT`)")
        total, checkpoints = ExperimentDir.parse(out.path).disk_usage()
        print(f"Disk: {total / 2**20:.1f} MiB in {out.path} ({checkpoints / 2**20:.1f} MiB of checkpoints: "
              "each trial keeps its best and its latest epoch)", flush=True)
        print(f"After tuning: best model{', test evaluation' if test is not None else ''} and costs {out.timings['best_model']:.1f} s, "
              f"tables, figures and index.html {out.timings['report']:.1f} s", flush=True)
    if out.unfinished:
        print(f"ecg-ray: {out.unfinished} of {cfg.n_trials} trial(s) did not finish. "
              f"Continue with: ecg-ray tune --resume {out.path}", file=sys.stderr)
        return 1
    if out.errors:
        print(f"ecg-ray: {out.errors} trial(s) failed after their retries; see error.txt in their trial folders "
              f"under {out.path}. Retry them with: ecg-ray tune --resume {out.path}", file=sys.stderr)
        return 1
    return 0


def _with_mlflow(cfg, uri: str | None):
    """`cfg` with --mlflow URI in place of tracking.mlflow_uri; the extra checked before anything runs."""
    import dataclasses

    if uri:
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, mlflow_uri=uri))
    if cfg.tracking.mlflow_uri:
        from ecg_ray.results.integrations.tracking import require_mlflow

        require_mlflow()
        # Said at the start: on a resume the URI comes from the folder, and the runs' numbers go there.
        print(f"[ecg-ray] MLflow: the runs are also logged to {cfg.tracking.mlflow_uri} when the trials end", flush=True)
    return cfg


def cmd_report(args) -> int:
    from ecg_ray.results.page.console import summary_text
    from ecg_ray.results.report import write_report

    if args.mlflow:
        from ecg_ray.results.integrations.tracking import require_mlflow

        require_mlflow()
    from ecg_ray.results.report import read_results

    results = read_results(args.experiment_dir)  # the folder read once (a bucket's downloaded once) for every step below
    if args.optuna_storage:  # refused before any table is written: nobody's study is replaced
        from ecg_ray.results.integrations.optuna_study import claim

        claim(results, args.optuna_storage, args.optuna_study, args.optuna_replace)
    trials, written, problems = write_report(results, args.out, args.format, args.allow_partial)
    _warn(problems)
    print(summary_text(trials))
    print("Tables and figures: " + ", ".join(str(p) for p in written))
    if args.optuna_storage:
        from ecg_ray.results.integrations.optuna_study import write_study

        name, n = write_study(results, args.optuna_storage, args.optuna_study, args.optuna_replace)
        print(f"[ecg-ray] Optuna study {name!r} ({n} trials) in {args.optuna_storage}: optuna-dashboard {args.optuna_storage}")
    if args.mlflow:
        from ecg_ray.results.integrations.tracking import sync

        warnings = sync(results, args.mlflow, args.mlflow_experiment)
        _warn(warnings)
        if not warnings:
            print(f"[ecg-ray] logged to MLflow at {args.mlflow}")
    return 0


def cmd_compare(args) -> int:
    from ecg_ray.results.compare import write_comparison
    from ecg_ray.results.tables.export import to_markdown

    best, pairs, written, problems = write_comparison(args.experiment_dirs, args.out, args.format, args.allow_partial, args.top)
    _warn(problems)
    print(f"Best {args.top} config(s) of each experiment:\n")
    shown = [c for c in best.columns if c not in ("val_challenge_f1_mean", "best_val_macro_f1_sd", "latency_device",
                                                  "peak_rss_mb", "peak_gpu_mb")]
    print(to_markdown(best[shown]))
    for _, row in pairs.iterrows():
        print(f"{row['a']} vs {row['b']}: {row['pairing']}")
    print("\n" + to_markdown(pairs.drop(columns="pairing")))
    print("Tables and page: " + ", ".join(written))
    return 0


def _warn(problems: list[str]) -> None:
    for problem in problems:
        print(f"ecg-ray: warning: {problem}", file=sys.stderr)


def cmd_rerun(args) -> int:
    from ecg_ray.commands.rerun import rerun

    return rerun(args.experiment_dir, args.trial_id, args.trust_pickle)


def cmd_predict(args) -> int:
    from ecg_ray.results.inference.predict import predict
    from ecg_ray.results.tables.export import EXPORTERS, to_markdown

    table = predict(args.model, args.input, args.trust_pickle, args.on_bad_record)
    for skipped in table.attrs.get("skipped", []):
        print(f"[ecg-ray] skipped record {skipped['record']}: {skipped['problem']}", flush=True)
    if args.out:
        writer = {ext: write for ext, write in EXPORTERS.values()}.get(os.path.splitext(args.out)[1])
        if writer is None:
            raise EcgRayError(f"--out {args.out}: name a .csv, .parquet, .json, .md or .tex file.")
        writer(table, Path(args.out))
        counts = table["predicted"].value_counts().to_dict()
        print(f"Wrote {len(table)} predictions to {args.out}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    else:
        print(to_markdown(table))
    return 0


def cmd_submit(args) -> int:
    from ecg_ray.tuning.submit import submit

    _check_tune_args(args.experiment, args.tune_args)  # before anything is staged or sent
    return submit(args.experiment, args.address, args.tune_args, args.working_dir, wait=not args.no_wait, include=args.include)


def _check_tune_args(experiment: str, tune_args: list[str]) -> None:
    """The options submit passes on are `ecg-ray tune`'s: a typo is refused here, not on the cluster."""
    import contextlib
    import io
    import shlex

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            build_parser().parse_args(["tune", experiment, *tune_args])
    except SystemExit:  # the parser's one line says what was wrong
        why = (said.getvalue().strip().splitlines() or [""])[-1].split(" error: ", 1)[-1].split(" (see `")[0]
        raise EcgRayError(f"the options after the experiment file are not `ecg-ray tune`'s ({shlex.join(tune_args)}: "
                          f"{why}); nothing was uploaded. See `ecg-ray tune --help`.") from None


def cmd_k8s(args) -> int:
    from ecg_ray.commands.k8s import manifest

    text = manifest(args.experiment, args.storage, args.gpus, args.source, args.name)
    if args.out:
        from ecg_ray.storage import atomic_write_text

        atomic_write_text(Path(args.out), text)
        print(f"[ecg-ray] wrote {args.out}: kubectl apply -f {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_models(args) -> int:
    from ecg_ray.models import describe

    print(describe())
    return 0


def cmd_stop_node(args) -> int:
    from ecg_ray.tuning.nodes import ray_temp_dir, stop

    if ray_temp_dir(args.temp_dir) is None:  # the first `ray start` on a host: nothing ran there yet
        print(f"[ecg-ray] no Ray instance has run in {args.temp_dir}; nothing to stop")
        return 0
    n = stop(args.temp_dir, args.grace_period)
    print(f"[ecg-ray] stopped {n} process(es) of the Ray instance in {args.temp_dir}" if n else
          f"[ecg-ray] no Ray process of {args.temp_dir} was running")
    return 0


def _data_config(args):
    from ecg_ray.config import load_experiment

    overrides = _data_overrides(args)
    for key in ("target_length", "sampling_rate", "min_length", "max_length", "on_bad_record"):
        if getattr(args, key, None) is not None:
            overrides[f"data.{key}"] = getattr(args, key)
    return _trusted(load_experiment(args.experiment, **overrides), args)  # no file: the defaults


def cmd_data_check(args) -> int:
    from ecg_ray.data.check import check_report

    text, ok = check_report(_data_config(args))
    print(text)
    return 0 if ok else 1


def cmd_data_convert(args) -> int:
    from ecg_ray.data.prepare import read_checked
    from ecg_ray.data.records import RecordSet
    from ecg_ray.data.sources import write_parquet

    args.data = args.src
    cfg = _data_config(args)
    _warn_about_pickles(cfg)
    splits, dropped = read_checked(cfg)
    # Every record as read, splits together: ecg-ray makes its split at tune time.
    merged = RecordSet.concat(list(splits.values()))
    write_parquet(merged, args.dest)
    print(f"Wrote {len(merged)} records to {args.dest} ({len(dropped)} bad record(s) skipped)")
    return 0


MLFLOW_HELP = ("also log the experiment to MLflow at this tracking URI (a server such as http://127.0.0.1:5000, "
               "or sqlite:///mlflow.db): a parent run and a run per trial, from the driver; needs the "
               "mlflow extra (default: tracking.mlflow_uri of the experiment file)")


def _add_run_options(p) -> None:
    """Options of every command that runs an experiment."""
    p.add_argument("--mlflow", metavar="URI", help=MLFLOW_HELP)
    p.add_argument("--address", help="Ray cluster to join ('auto' or host:port); default: $RAY_ADDRESS, else a new local Ray")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing experiment folder")
    p.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray (default: all cores)")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files in each trial's folder "
                                                              "(tensorboard --logdir EXPERIMENT_DIR)")
    p.add_argument("--format", nargs="+", default=list(DEFAULT_EXPORT_FORMATS), choices=EXPORT_FORMATS, help="table formats to export")


TRUST_HELP = ("load this pickle data file, once per pickle (loading one runs code stored in it: only files you "
              "made yourself); a folder that names another pickle stays refused")


class _Parser(argparse.ArgumentParser):
    """Usage mistakes end in one line, as every other refusal does (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ecg-ray", description="Tune the CinC 2017 ECG rhythm classifier on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("tune", help="run a grid of trials (Ray Tune + one Ray Train worker per trial)",
                       description="Run every grid point of an experiment file as a Ray Train trial under Ray Tune, "
                                   "then write and print the ranked tables.")
    t.add_argument("experiment", nargs="?", help="experiment YAML file, e.g. experiments/quick.yaml")
    _add_run_options(t)
    t.add_argument("--data", help="data source name (synthetic) or path: a training2017/ folder, a .pkl or a .parquet file")
    t.add_argument("--val-data", help="the val file of a pickle/Parquet pair (with --data TRAIN_FILE)")
    t.add_argument("--test-data", help="a held-out test set (a training2017/-layout folder, a .parquet or a .pkl file): "
                                       "never used for selection; the top configs' best checkpoints are evaluated on it")
    t.add_argument("--trust-pickle", action="append", default=[], metavar="FILE", help=TRUST_HELP)
    t.add_argument("--storage", help="storage path for results (local folder or s3://, gs:// URI); overrides storage_path")
    t.add_argument("--name", help="experiment name (folder under the storage path); overrides name")
    t.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted experiment; finished trials are kept")
    t.add_argument("--extend", metavar="EXPERIMENT_DIR", help="add the trials an edited experiment file adds (seeds, "
                   "configs, draws, Optuna budget) to a finished or interrupted experiment; its finished trials are kept "
                   "and the report covers all; an edit of its data, split, folds, scheduler or an existing config's "
                   "knobs is refused")
    gpu = t.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="gpu", action="store_const", const=True, help="one GPU per trial (needed when GPU nodes are autoscaled from zero)")
    gpu.add_argument("--cpu", dest="gpu", action="store_const", const=False, help="CPU workers even where GPUs exist")
    t.set_defaults(func=cmd_tune)

    rp = sub.add_parser("repeat", help="run the top K configs of a finished experiment again at N seeds",
                        description="Start a new experiment with the top K configs of EXPERIMENT_DIR (by best val macro-F1) "
                                    "at N seeds each, no early stopping, same data; its experiment file records where they came from.")
    rp.add_argument("experiment_dir", help="the finished experiment folder (or its s3:// / gs:// URI)")
    rp.add_argument("--top", type=int, default=3, help="how many configs (default 3)")
    rp.add_argument("--seeds", type=int, default=3, help="seeds per config: the source's seed, +1, ... (default 3)")
    rp.add_argument("--folds", type=int, help="cross-validate them on K stratified folds of the source's train and val "
                    "records (default: the source's split)")
    rp.add_argument("--name", help="the new experiment's name (default: SOURCE_topKxN)")
    rp.add_argument("--storage", help="where the new experiment goes (default: beside the source)")
    rp.add_argument("--trust-pickle", action="append", default=[], metavar="FILE", help=TRUST_HELP)
    _add_run_options(rp)
    rp.set_defaults(func=cmd_repeat)

    r = sub.add_parser("report", help="rebuild ranked tables from an experiment folder (nothing is re-run)",
                       description="Rank the trials of an experiment folder (local or bucket URI) by best val macro-F1 and export the tables.")
    r.add_argument("experiment_dir", help="the experiment folder (storage_path/name) or its s3:// / gs:// URI")
    r.add_argument("--format", nargs="+", default=list(DEFAULT_EXPORT_FORMATS), choices=EXPORT_FORMATS, help="table formats")
    r.add_argument("--out", help="output folder (default: EXPERIMENT_DIR/report)")
    r.add_argument("--allow-partial", action="store_true",
                   help="write the tables from what is readable when files are damaged (each is named); default: refuse")
    r.add_argument("--mlflow", metavar="URI", help="also log the folder to MLflow at this tracking URI (the same runs a "
                   "second time: only what is new is logged); needs the mlflow extra")
    r.add_argument("--mlflow-experiment", metavar="NAME", help="the MLflow experiment (default: the experiment's name)")
    r.add_argument("--optuna-storage", metavar="URL", help="also write the trials as an Optuna study to this RDB URL "
                   "(sqlite:///studies.db), for optuna-dashboard; a second write replaces this experiment's study, "
                   "and a study of that name that is not this experiment's is refused")
    r.add_argument("--optuna-study", metavar="NAME", help="the study's name (default: the experiment's name)")
    r.add_argument("--optuna-replace", action="store_true",
                   help="replace a study of that name even where it is not this experiment's (another's, a hand-made one)")
    r.set_defaults(func=cmd_report)

    cp = sub.add_parser("compare", help="two or more experiment folders side by side: best configs, costs, paired tests",
                        description="Compare experiment folders (local or bucket URIs): each one's best configs with mean, "
                        "CI and cost; paired tests where their data and split match; one self-contained HTML page.")
    cp.add_argument("experiment_dirs", nargs="+", metavar="DIR", help="two or more experiment folders")
    cp.add_argument("--out", required=True, help="the folder for best.*, pairs.*, learning_curves.png and index.html")
    cp.add_argument("--format", nargs="+", default=["csv", "markdown", "latex"], choices=EXPORT_FORMATS, help="table formats")
    cp.add_argument("--top", type=int, default=3, help="configs of each experiment in the best table (default 3)")
    cp.add_argument("--allow-partial", action="store_true",
                    help="compare what is readable when files are damaged (each is named); default: refuse")
    cp.set_defaults(func=cmd_compare)

    rr = sub.add_parser("rerun", help="re-run one trial without Ray and check every epoch against the recorded metrics",
                        description="Rebuild a trial from its experiment folder with plain PyTorch and compare each epoch's "
                                    "metrics with the recorded ones; on CPU they must match bit for bit. Exit 0: identical; "
                                    "1: the first difference is named.")
    rr.add_argument("experiment_dir", help="the experiment folder (or its s3:// / gs:// URI)")
    rr.add_argument("trial_id", help="the trial's key, as in the tables (t0000, t0001, ...)")
    rr.add_argument("--trust-pickle", action="append", default=[], metavar="FILE", help=TRUST_HELP)
    rr.set_defaults(func=cmd_rerun)

    from ecg_ray.commands.k8s import PLACEHOLDER_SOURCE, PLACEHOLDER_STORAGE

    k = sub.add_parser("k8s", help="print a KubeRay RayJob manifest that runs an experiment file on Kubernetes",
                       description="Print a KubeRay RayJob (ray.io/v1) that creates a RayCluster (a CPU head that runs no "
                                   "trial, a GPU worker group autoscaled from zero), runs `ecg-ray tune EXPERIMENT --gpu "
                                   "--storage URI` on it, and deletes it afterwards. The experiment file is validated first; "
                                   "every value to change is marked CHANGE.")
    k.add_argument("experiment", help="the experiment file, inside this project (e.g. experiments/seed_grid.yaml)")
    k.add_argument("--storage", default=PLACEHOLDER_STORAGE, help=f"results bucket URI (default: {PLACEHOLDER_STORAGE}, to change)")
    k.add_argument("--gpus", type=int, default=4, help="the most GPU worker pods, one GPU each (default 4)")
    k.add_argument("--source", default=PLACEHOLDER_SOURCE, help=f"the project zip's URI, the job's working_dir (default: {PLACEHOLDER_SOURCE})")
    k.add_argument("--name", help="the RayJob's name (default: ecg-ray-<experiment name>)")
    k.add_argument("--out", help="write the manifest here instead of printing it")
    k.set_defaults(func=cmd_k8s)

    mo = sub.add_parser("models", help="list the registered models (built in and plug-ins), their packages and hyperparameters",
                        description="The models `search.model` can name: ecg_ray's own and those of installed plug-in "
                                    "packages (entry-point group ecg_ray.models), each with what it reads and its own "
                                    "hyperparameters (`search.model_args`).")
    mo.set_defaults(func=cmd_models)

    sn = sub.add_parser("stop-node", help="stop one Ray instance on this host (by its --temp-dir), not every Ray as `ray stop` does",
                        description="Stop the processes of the Ray instance started with `ray start --temp-dir=DIR`: SIGTERM, "
                                    "then SIGKILL after the grace period. Other Ray instances on the host are left alone.")
    sn.add_argument("--temp-dir", required=True, help="the --temp-dir its `ray start` was given")
    sn.add_argument("--grace-period", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL (default 10)")
    sn.set_defaults(func=cmd_stop_node)

    pr = sub.add_parser("predict", help="classify records with an experiment's best_model.pt",
                        description="Predict the rhythm class of every record of INPUT (a challenge folder, one .mat/.hea "
                                    "record, a .parquet or a .pkl file) with MODEL (the best_model.pt `ecg-ray tune` wrote).")
    pr.add_argument("model", help="a best_model.pt")
    pr.add_argument("input", help="a challenge folder, a .mat/.hea record, a .parquet or a .pkl file")
    pr.add_argument("--out", help="write the table to this .csv/.parquet/.json/.md file (default: print it)")
    pr.add_argument("--trust-pickle", action="append", default=[], metavar="FILE", help=TRUST_HELP)
    pr.add_argument("--on-bad-record", choices=["error", "skip"], default="error", help="stop at bad records or skip them")
    pr.set_defaults(func=cmd_predict)

    from ecg_ray.tuning.submit import DEFAULT_DASHBOARD

    s = sub.add_parser("submit", help="submit `ecg-ray tune` as a job to a running Ray cluster and follow it",
                       description="Submit EXPERIMENT as a Ray job (working dir: the project) and stream its logs. "
                                   "Arguments after the experiment go to `ecg-ray tune` (e.g. --storage s3://bucket/results --gpu).")
    s.add_argument("experiment", help="experiment YAML file, relative to the working dir")
    s.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", DEFAULT_DASHBOARD),
                   help=f"the cluster's dashboard (default {DEFAULT_DASHBOARD}, reached via `ray dashboard cluster.yaml`)")
    s.add_argument("--working-dir", default=".", help="the project folder to upload from (default: .); only ecg_ray/*.py, "
                   "experiments/*.yaml, pyproject.toml, the experiment file and --include paths are uploaded")
    s.add_argument("--include", action="append", default=[], metavar="PATH",
                   help="also upload this file or folder of the working dir (repeatable)")
    s.add_argument("--no-wait", action="store_true", help="return once submitted; follow with `ray job logs --follow`")
    s.add_argument("tune_args", nargs=argparse.REMAINDER, help="passed on to `ecg-ray tune`")
    s.set_defaults(func=cmd_submit)

    d = sub.add_parser("data", help="check or convert data", description="Inspect or convert a data source.")
    dsub = d.add_subparsers(dest="data_command", required=True)
    for name, func, helptext in (("check", cmd_data_check, "print class counts, lengths, amplitudes and every problem found"),
                                 ("convert", cmd_data_convert, "convert any source to Parquet (record, signal, label)")):
        c = dsub.add_parser(name, help=helptext, description=helptext)
        if name == "check":
            c.add_argument("data", help="a training2017/ folder, a .pkl or .parquet file, or 'synthetic'")
        else:
            c.add_argument("src", help="a training2017/ folder, a .pkl or .parquet file, or 'synthetic'")
            c.add_argument("dest", help="the Parquet file to write")
        c.add_argument("--val-data", help="the val file of a pickle/Parquet pair")
        c.add_argument("--trust-pickle", action="append", default=[], metavar="FILE", help=TRUST_HELP)
        c.add_argument("--experiment", default=None, help="take the other data settings from this experiment file")
        c.add_argument("--target-length", type=int, help="samples per record after pad/trim (default 9000)")
        c.add_argument("--sampling-rate", type=int, help="expected sampling rate in Hz (default 300)")
        c.add_argument("--min-length", type=int, help="shortest acceptable record in samples (default 2700)")
        c.add_argument("--max-length", type=int, help="longest acceptable record in samples (default 60000)")
        c.add_argument("--on-bad-record", choices=["error", "skip"], help="stop at bad records or skip them")
        c.set_defaults(func=func)
    return p


def _option_rules() -> dict:
    """Each command-line value's rule, in the experiment file's words (ecg_ray.config.constraints): checked
    by `check_options` before any data is prepared and before Ray starts."""
    from ecg_ray.config.constraints import Rule
    from ecg_ray.config.sections import MLFLOW_URI, DataConfig, mlflow_uri_ok

    cores = os.cpu_count() or 1
    def whole(lo, hi=None):
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    return {
        "num_cpus": Rule(f"a whole number of CPUs for a new local Ray, 1 to {4 * cores} (at most 4 per core of this "
                         f"machine's {cores}; a cluster's CPUs are its nodes')", whole(1, 4 * cores)),
        "mlflow": Rule(MLFLOW_URI, mlflow_uri_ok),
        "top": Rule("a whole number of configs, at least 1", whole(1)),
        "seeds": Rule("a whole number of seeds per config, 1 to 100", whole(1, 100)),
        "folds": Rule("a whole number of folds, 2 to 20", whole(2, 20)),
        "gpus": Rule("a whole number of GPU worker pods, 1 to 1000", whole(1, 1000)),
        "grace_period": Rule("a number of seconds from 0 to 3600", lambda v: isinstance(v, (int, float)) and 0 <= v <= 3600),
        "address": Rule("'auto', HOST:PORT or ray://HOST:PORT of a running Ray cluster", _ray_address),
        "dashboard_address": Rule("the Ray dashboard's URL, http://HOST:PORT (e.g. http://127.0.0.1:8265), or a Ray "
                                  "cluster's address ('auto', HOST:PORT, ray://HOST:PORT)",
                                  lambda v: _dashboard_url(v) or _ray_address(v)),
    } | {key: DataConfig.CONSTRAINTS[key] for key in ("target_length", "sampling_rate", "min_length", "max_length")}


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536 and not any(c.isspace() or c in "/?#@" for c in host))


def _after_scheme(value: str, schemes: tuple[str, ...]) -> str | None:
    """What follows SCHEME:// in `value` when its scheme is one of `schemes`; None otherwise."""
    from ecg_ray.storage import scheme

    kind = scheme(value)
    return value[len(kind) + 3:] if kind in schemes else None


def _ray_address(value) -> bool:
    if not isinstance(value, str):
        return False
    rest = _after_scheme(value, ("ray",))
    return value == "auto" or _host_port(value if rest is None else rest)


def _dashboard_url(value) -> bool:
    rest = _after_scheme(value, ("http", "https")) if isinstance(value, str) else None
    return rest is not None and _host_port(rest.rstrip("/"))


def check_options(args) -> None:
    """Every command-line value the command was given, against its rule; a ConfigError in the file's words
    ("The '--num-cpus' parameter must be ...") before anything is read or started."""
    from ecg_ray.config.constraints import validate

    rules = _option_rules()
    if getattr(args, "command", None) == "submit":  # its --address is the dashboard's URL, not a Ray address
        rules["address"] = rules.pop("dashboard_address")
    for key, rule in rules.items():
        value = getattr(args, key, None)
        if value is not None:
            validate("--" + key.replace("_", "-"), value, rule)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage mistake (one line said already)
        return done.code if isinstance(done.code, int) else 2
    try:
        check_options(args)
        return args.func(args)
    except EcgRayError as err:
        print(f"ecg-ray: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        import errno

        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # A read-only output folder (or file system): what could not be written, and the fix.
        print(f"ecg-ray: error: cannot write {err.filename or 'a file'}: {err.strerror or 'permission denied'}. Pass an "
              "output folder you can write (--out, --storage), or make that one writable; files are written whole or "
              "not at all.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecg-ray: interrupted; files are written whole or not at all, so nothing is half-written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
