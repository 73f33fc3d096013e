"""The experiment folder: the one owner of its layout, its paths and its files.

    python -c "from ecg_ray.results.store.folder import ExperimentDir; print(ExperimentDir.parse('~/ecg_ray_results/quick').status_file)"

Layout of an experiment folder (storage_path/name):

    ecg_ray_experiment.json   config, grid, data hash and settings (written before any trial)
    data_splits.json          record ids of every split
    trial_status.json         each trial's Tune status (updated as trials end)
    progress.jsonl            one line per finished epoch of any trial, as it happens (local folders)
    <trial dirs>/             Tune's params.json + result.json (one line per epoch)
    train_runs/<trial id>/    the Ray Train run of that trial: checkpoints (trial_state.pt), resumable
    report/                   ranked tables (ecg_ray.results.report)

A folder is a local path or a bucket URI (s3://, gs://, file://): every read and
write goes through ecg_ray.storage, the one layer that tells them apart. No other
module spells a file name of this layout. A command reads a folder once, as an
ecg_ray.results.store.state.FolderState, and passes that along.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ecg_ray.config import ExperimentConfig, TrialConfig, experiment_from_dict
from ecg_ray.errors import ConfigError
from ecg_ray import storage

EXPERIMENT_FILE = "ecg_ray_experiment.json"
SPLITS_FILE = "data_splits.json"
STATUS_FILE = "trial_status.json"
PROGRESS_FILE = "progress.jsonl"
RUNS_FILE = "runs.json"  # one entry per `ecg-ray tune` run: start, end, versions, cluster (the report's provenance)
TEST_FILE = "test_results.json"  # the held-out test evaluation, one row per trial of the top configs
TEST_PREDICTIONS = "test_predictions.json"  # that evaluation's prediction of every test record, per trial (`ecg-ray compare`)
OOF_FILE = "oof_predictions.json"  # a cross-validated experiment's out-of-fold predictions (ecg_ray.results.analysis.oof)
COSTS_FILE = "costs.json"  # parameters, MACs and inference latency per model shape (ecg_ray.results.analysis.cost)
# ecg_ray's own records at the folder's top: what a FolderState loads (Tune's own state files are not read)
RECORD_FILES = (EXPERIMENT_FILE, SPLITS_FILE, STATUS_FILE, RUNS_FILE, TEST_FILE, TEST_PREDICTIONS, OOF_FILE, COSTS_FILE)
TRAIN_RUNS = "train_runs"
REPORT_DIR = "report"
CHECKPOINT_FILE = "trial_state.pt"  # inside each Ray Train checkpoint folder
BEST_MODEL = "best_model.pt"  # the best config's model (its trials' ensemble when it has several), for `ecg-ray predict`
BEST_TRIAL_MODEL = "best_trial_model.pt"  # beside an ensemble: the best config's single best trial
TRIAL_PARAMS = "params.json"  # Tune's, in each trial folder
TRIAL_RESULTS = "result.json"  # Tune's, one JSON line per reported epoch
MIN_FREE_BYTES = 200 * 2**20


# --- paths and files: ecg_ray.storage's, named here for the folder ---------------------------

STORAGE_SCHEMES = storage.SCHEMES
is_uri, uri_scheme, expand, join = storage.is_uri, storage.scheme, storage.expand, storage.join
remove_tree = storage.remove_tree


def check_scheme(path: str, what: str) -> None:
    """Refuse a URI whose scheme experiment folders cannot live under, naming `what` gave it."""
    scheme = uri_scheme(path)
    if scheme and scheme not in STORAGE_SCHEMES:
        raise ConfigError(f"{what} {path}: experiment folders are local folders or URIs of "
                          f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}, not {scheme}://.")


def write_json(path: str, obj) -> None:
    """Write JSON to a local path (atomically) or a bucket URI (one PUT, also all-or-nothing)."""
    storage.write_bytes(path, storage.dumps(obj).encode())


class DamagedFile(ConfigError):
    """A file of an experiment folder that exists but cannot be read."""


def parse_json(text: bytes | None, path: str):
    """JSON of a file's bytes (None for a file that is absent); DamagedFile, naming it, when not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedFile(f"{path} is damaged: not valid JSON ({err}).") from None


def read_json(path: str):
    """Read JSON from a local path or a bucket URI; None when it does not exist.

    Raises DamagedFile, naming the file, when it is not valid JSON.
    """
    return parse_json(storage.read_optional(path), path)


def parse_jsonl(text: bytes, path: str, problems: list[str]) -> list[tuple[int, dict]]:
    """(line number, object) for each whole line of a JSON-lines file's bytes.

    A line that is not valid JSON (the last line of a killed run may be cut off) is skipped
    and named in `problems`.
    """
    rows = []
    for lineno, line in enumerate(text.decode(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError:
            problems.append(f"{path}, line {lineno}: cut off or not JSON ({line[:60]!r}); that line was skipped")
    return rows


def check_writable(path: str, min_free_bytes: int = MIN_FREE_BYTES) -> list[Path]:
    """Fail now, not after an hour, when a local storage path cannot take results.

    Returns the folders it had to create, deepest first (removed again when no experiment
    was started there: ExperimentDir.lock). Bucket URIs are left to Ray's storage layer (it
    fails on the first write).
    """
    try:
        made, free = storage.prepare_folder(path)
    except OSError as err:
        raise ConfigError(
            f"The storage path {Path(path)} is not writable ({err.strerror or err}). "
            "Pass --storage DIR (or set storage_path in the experiment file) to a folder you can write."
        ) from None
    if free is not None and free < min_free_bytes:
        raise ConfigError(
            f"The storage path {Path(path)} has {free / 2**20:.0f} MiB free; an experiment needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB for checkpoints and tables. Free space or pass --storage DIR."
        )
    return made


def _describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']}, started {h['started']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return text[:200]


# --- the folder -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialFiles:
    """What Tune wrote for one trial: its folder, params.json, and result.json's whole lines.

    `damaged`: problems reading result.json (lines skipped), each naming the file and line.
    """

    folder: str  # the folder's name
    path: str
    params: dict
    results: list[tuple[int, dict]]
    damaged: tuple[str, ...] = ()
    results_size: int | None = None  # result.json's bytes; None when it is missing

    @property
    def results_file(self) -> str:
        return join(self.path, TRIAL_RESULTS)


@dataclass(frozen=True)
class ExperimentDir:
    """One experiment folder, local (absolute path) or a bucket URI.

    Build it with `ExperimentDir.parse(text)` from user input, or `ExperimentDir.for_config(cfg)`.
    """

    path: str

    @classmethod
    def parse(cls, text: str | os.PathLike) -> "ExperimentDir":
        """From a path or URI a user typed (~ expanded, made absolute, trailing '/' dropped)."""
        check_scheme(str(text), "The experiment folder")
        return cls(expand(str(text)))

    @classmethod
    def at(cls, storage_root: str, name: str) -> "ExperimentDir":
        return cls(join(storage_root, name))

    @classmethod
    def for_config(cls, cfg: ExperimentConfig) -> "ExperimentDir":
        """The folder an experiment writes: its storage_path (~ expanded; a URI as it is) / its name."""
        check_scheme(cfg.storage_path, "storage_path")
        return cls.at(expand(cfg.storage_path), cfg.name)

    def __str__(self) -> str:
        return self.path

    @property
    def is_uri(self) -> bool:
        return is_uri(self.path)

    @property
    def storage_root(self) -> str:
        """The folder that holds this one (Tune's storage_path)."""
        return self.path.rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        """The experiment's folder name (Tune's experiment name)."""
        return self.path.rsplit("/", 1)[1]

    def join(self, *parts: str) -> str:
        return join(self.path, *parts)

    @property
    def experiment_file(self) -> str:
        return self.join(EXPERIMENT_FILE)

    @property
    def splits_file(self) -> str:
        return self.join(SPLITS_FILE)

    @property
    def status_file(self) -> str:
        return self.join(STATUS_FILE)

    @property
    def progress_file(self) -> str:
        return self.join(PROGRESS_FILE)

    @property
    def train_runs(self) -> str:
        """Ray Train's storage path: one run per trial, named by the trial id."""
        return self.join(TRAIN_RUNS)

    @property
    def report_dir(self) -> str:
        return self.join(REPORT_DIR)

    @property
    def lock_file(self) -> str:
        """Beside the folder, so that --overwrite can remove the folder while the lock is held.

        A bucket has no locks: a URI folder is locked on this machine only, under the cache folder.
        """
        return storage.lock_file(self.path, os.path.expanduser(os.environ.get("ECG_RAY_CACHE", "~/.cache/ecg_ray")))[0]

    @contextlib.contextmanager
    def lock(self, made: list[Path] = ()) -> Iterator[None]:
        """Hold this experiment for one `ecg-ray tune` at a time; a second one fails at once.

        An flock on the lock file: the kernel releases it when its holder exits, however it
        exits, so a lock left by a killed run is recognised as stale and taken over. The file
        records who holds it, for the message the second run prints. A run refused before it
        started an experiment leaves nothing: the lock file goes (while still held), and so do
        the empty folders in `made` (check_writable's).
        """
        path = Path(self.lock_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(
                    f"The experiment folder {self.path} is in use by another `ecg-ray tune` ({_describe_holder(holder)}). "
                    f"Wait for it to end (or stop it), or choose another --name. The lock, {path}, is released when that process exits."
                ) from None
            try:  # the file its last holder unlinked is no lock any more: open the one at the path now
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            stale = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            if stale:
                print(f"[ecg-ray] a lock left by a run that is no longer running ({_describe_holder(stale)}) was taken over", flush=True)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            yield
        finally:
            os.ftruncate(fd, 0)  # released cleanly: nothing stale to report next time
            # A stat, not a read; a bucket's lock lives in the cache and is kept (storage.lock_file says which).
            unused = storage.lock_file(self.path, "")[1] and not storage.is_file(self.experiment_file)
            if unused:
                path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            for folder in made if unused else ():
                with contextlib.suppress(OSError):  # not empty (someone else's files): kept
                    folder.rmdir()

    # --- the experiment record -----------------------------------------------------------
    # Every JSON record is read through _read_json and written through _write_json: a FolderState
    # (ecg_ray.results.store.state) answers them from what it read once.

    def _read_json(self, name: str):
        return read_json(self.join(name))

    def _write_json(self, name: str, obj) -> None:
        write_json(self.join(name), obj)

    def exists(self) -> bool:
        """Whether an experiment was started here (its experiment file exists)."""
        return self._read_json(EXPERIMENT_FILE) is not None

    def read_record(self) -> dict:
        """The experiment file: config, grid, data hash, data metadata, settings."""
        recorded = self._read_json(EXPERIMENT_FILE)
        if recorded is None:
            raise ConfigError(
                f"{self.path} is not an ecg_ray experiment folder: {EXPERIMENT_FILE} is missing. "
                "Pass the folder `ecg-ray tune` printed."
            )
        if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
            raise DamagedFile(f"{self.experiment_file} is damaged: it holds no experiment config (`config`). Restore "
                              "it from a backup, or start the experiment again with --overwrite.")
        return recorded

    def write_record(self, record: dict, splits: dict) -> None:
        """Write the experiment file and the split record ids, before any trial starts."""
        self._write_json(EXPERIMENT_FILE, record)
        self._write_json(SPLITS_FILE, splits)

    def recorded_trials(self) -> dict:
        """Trial key -> TrialConfig of every trial the experiment file records (for an Optuna
        search, those suggested so far)."""
        record = self.read_record()
        return {key: TrialConfig.from_dict(t) for key, t in zip(record.get("trial_keys", []), record.get("grid", []))}

    def record_trials(self, trials: dict) -> None:
        """Record the trials (key -> TrialConfig) in the experiment file: an Optuna search adds each batch."""
        record = self.read_record()
        record["trial_keys"], record["grid"] = list(trials), [dataclasses.asdict(t) for t in trials.values()]
        self._write_json(EXPERIMENT_FILE, record)

    def read_config(self, trust_pickle: Sequence[str] = ()):
        """The ExperimentConfig recorded here, with storage and name taken from where the folder is now.

        Whether a pickle data file may be loaded is the caller's word, never the folder's:
        `trust_pickle` names each pickle file (`--trust-pickle FILE`), and each must still hold
        what it held when the experiment started (ecg_ray.data.trust).
        """
        from ecg_ray.data.trust import check_named, check_recorded, pickle_paths

        record = self.read_record()
        raw = record["config"]
        raw = {**raw, "storage_path": self.storage_root, "name": self.name}

        def config(trusted: bool):
            return experiment_from_dict({**raw, "data": {**raw.get("data", {}), "trust_pickle": trusted}}, origin=self.experiment_file)

        pickles = pickle_paths(config(True).data)  # which pickles the folder names (nothing is read yet)
        where = f"The experiment folder {self}"
        warnings = check_recorded(pickles, record.get("pickles"), where)  # an edited folder, before any advice to trust
        check_named(pickles, trust_pickle, where)
        for warning in warnings:
            print(f"[ecg-ray] warning: {warning}", file=sys.stderr, flush=True)
        return config(bool(trust_pickle))  # True only when every pickle it reads is named

    def recorded_config(self):
        """The experiment's config as recorded (read, never loaded: no data is touched, no pickle
        trusted); None without one that names its scheduler.group (made before grouped ASHA)."""
        record = self._read_json(EXPERIMENT_FILE)
        if not record or "config" not in record or "group" not in (record["config"].get("scheduler") or {}):
            return None
        raw = record["config"]
        return experiment_from_dict({**raw, "data": {**raw.get("data", {}), "trust_pickle": True}}, origin=self.experiment_file)

    def scheduler_name(self) -> str | None:
        """The scheduler the experiment ran with, or None when the experiment file is absent."""
        recorded = self._read_json(EXPERIMENT_FILE)
        if not recorded:
            return None
        return ((recorded.get("config") or {}).get("scheduler") or {}).get("name", "asha")  # absent: the default

    # --- live state ----------------------------------------------------------------------

    def read_runs(self) -> list[dict]:
        """The runs of this experiment, oldest first ([] when none was recorded)."""
        return self._read_json(RUNS_FILE) or []

    def record_run(self, run: dict) -> None:
        """Add a run, or update the last one when `run` has the same "started" (its end)."""
        runs = self.read_runs()
        if runs and runs[-1].get("started") == run.get("started"):
            runs[-1] = run
        else:
            runs.append(run)
        self._write_json(RUNS_FILE, runs)

    def read_test_results(self) -> list[dict] | None:
        """The test evaluation's rows; None when the experiment has no test evaluation."""
        return self._read_json(TEST_FILE)

    def write_test_results(self, rows: list[dict]) -> None:
        self._write_json(TEST_FILE, rows)

    def read_test_predictions(self) -> dict | None:
        """{"ids": [record id], "y": [label], "pred": {trial id: [class]}}; None when absent."""
        return self._read_json(TEST_PREDICTIONS)

    def write_test_predictions(self, predictions: dict) -> None:
        self._write_json(TEST_PREDICTIONS, predictions)

    def read_oof(self) -> dict | None:
        """{"y": {record: label}, "pred": {trial id: {"ids", "pred"}}}; None without folds."""
        return self._read_json(OOF_FILE)

    def write_oof(self, oof: dict) -> None:
        self._write_json(OOF_FILE, oof)

    def read_costs(self) -> dict | None:
        """{"rows": [shape keys + cost columns], "host", "repeats"}; None when not measured yet."""
        return self._read_json(COSTS_FILE)

    def write_costs(self, costs: dict) -> None:
        self._write_json(COSTS_FILE, costs)

    def read_splits(self) -> dict:
        """{"data_hash", "ids": {split: [record id]}} ({} when absent)."""
        return self._read_json(SPLITS_FILE) or {}

    def read_statuses(self) -> dict:
        """trial id -> {"status", "last_epoch"} from trial_status.json ({} when absent)."""
        return self._read_json(STATUS_FILE) or {}

    def update_statuses(self, changes: dict[str, dict]) -> None:
        """Merge trial id -> {"status", "last_epoch"} into trial_status.json; other trials are kept."""
        old = self.read_statuses()
        self._write_json(STATUS_FILE, old | {k: {**old.get(k, {}), **v} for k, v in changes.items()})

    def append_progress(self, line: dict) -> None:
        """One line per finished epoch (`tail -f` it). Local folders only: an object store has no append."""
        storage.append_line(self.progress_file, json.dumps(line))

    def read_progress(self) -> list[dict]:
        """Every line append_progress wrote, in order ([] when none was: a bucket folder, or no epoch yet)."""
        return [json.loads(line) for line in storage.appended_lines(self.progress_file)]

    def remove(self) -> None:
        remove_tree(self.path)

    # --- the trials Tune wrote --------------------------------------------------------------

    def listing(self) -> dict[str, int]:
        """Relative path -> size of every file of the folder but its checkpoints and tables (one listing)."""
        return storage.files(self.path, skip=(f"{TRAIN_RUNS}/", f"{REPORT_DIR}/"))

    def trials(self, problems: list[str] | None = None) -> list[TrialFiles]:
        """Every readable Tune trial folder, sorted by folder name (each file read once).

        A folder whose params.json cannot be read is skipped and named in `problems`.
        """
        listing = self.listing()
        wanted = [rel for rel in listing if is_trial_file(rel)]
        return trial_files(self, {rel: storage.read_optional(self.join(rel)) for rel in wanted}, problems)

    @property
    def best_model(self) -> str:
        return self.join(BEST_MODEL)

    @property
    def best_trial_model(self) -> str:
        return self.join(BEST_TRIAL_MODEL)

    def checkpoints(self, trial_key: str) -> list[str]:
        """The checkpoint files kept for one trial (its best epoch and its latest), local paths or URIs."""
        run = self.join(TRAIN_RUNS, trial_key)
        return sorted(join(run, rel) for rel in storage.files(run)
                      if rel.startswith("checkpoint_") and rel.endswith("/" + CHECKPOINT_FILE) and rel.count("/") == 1)

    def disk_usage(self) -> tuple[int, int]:
        """(bytes in the whole folder, bytes in its Train runs: the checkpoints)."""
        sizes = storage.files(self.path)
        return sum(sizes.values()), sum(s for rel, s in sizes.items() if rel.startswith(f"{TRAIN_RUNS}/"))

    def read_bytes(self, path: str) -> bytes:
        """A file of this folder, local path or URI."""
        return storage.read_bytes(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file of this folder whole (atomically on local disk, one PUT on a bucket)."""
        storage.write_bytes(path, data)

    def remove_file(self, path: str) -> None:
        """Delete one file of this folder, if it is there."""
        storage.remove_file(path)


def is_trial_file(rel: str) -> bool:
    """Whether a relative path is a Tune trial folder's params.json or result.json."""
    parts = rel.split("/")
    return len(parts) == 2 and parts[1] in (TRIAL_PARAMS, TRIAL_RESULTS) and parts[0] not in (TRAIN_RUNS, REPORT_DIR)


def trial_files(exp: ExperimentDir, contents: dict[str, bytes | None], problems: list[str] | None) -> list[TrialFiles]:
    """TrialFiles of every trial folder from its files' bytes (relative path -> bytes, None: missing)."""
    problems = [] if problems is None else problems
    out = []
    for rel in sorted(r for r in contents if r.endswith("/" + TRIAL_PARAMS)):
        name = rel.split("/")[0]
        folder = exp.join(name)
        try:
            params = parse_json(contents[rel], join(folder, TRIAL_PARAMS))
        except DamagedFile as err:
            problems.append(f"{err} The trial folder {name} was skipped")
            continue
        if not isinstance(params, dict):
            problems.append(f"{join(folder, TRIAL_PARAMS)} is damaged: not a JSON object. The trial folder {name} was skipped")
            continue
        damaged: list[str] = []
        text = contents.get(f"{name}/{TRIAL_RESULTS}")
        results = parse_jsonl(text, join(folder, TRIAL_RESULTS), damaged) if text is not None else []
        out.append(TrialFiles(name, folder, params, results, tuple(damaged), None if text is None else len(text)))
    return out


def not_an_experiment(location: str) -> str:
    """Why `location`, which holds no experiment record, is not an experiment folder, and what to pass
    instead (one clause): an experiment's report/, a storage folder of experiments, a data folder."""
    location = storage.expand(str(location))
    above = storage.parent(location)
    if storage.basename(location) == REPORT_DIR and storage.is_file(storage.join(above, EXPERIMENT_FILE)):
        return f"this is the report/ of the experiment folder {above}; pass {above}"
    names = storage.files(location)
    inside = sorted({rel.split("/")[0] for rel in names if rel.count("/") == 1 and rel.endswith("/" + EXPERIMENT_FILE)})
    if inside:
        shown = ", ".join(storage.join(location, n) for n in inside[:3]) + (", ..." if len(inside) > 3 else "")
        return f"it is a storage folder holding {len(inside)} experiment folder(s) ({shown}); pass one of them"
    if any(rel.endswith((".hea", ".mat")) or rel.rsplit("/", 1)[-1] == "REFERENCE.csv" for rel in names):
        return "it holds ECG records (a data folder); pass it to `ecg-ray tune --data`, and an experiment folder here"
    return "it holds no ecg_ray_experiment.json; pass the folder `ecg-ray tune` printed"
