"""An experiment folder read once per command: its JSON records and Tune's trial files, in memory.

    from ecg_ray.results.store.state import FolderState
    state = FolderState.load("s3://bucket/results/quick")   # one listing, each file read once
    state.read_statuses(); state.trials()                    # from memory, no request

A FolderState is an ExperimentDir (the same paths, the same read_* / write_* methods) whose
reads come from what it loaded and whose writes go to storage and to memory alike, so the
phases of a command (the driver's preflight and tuning, then best model, test evaluation,
out-of-fold predictions, costs, report, MLflow) share one state and none opens the folder
again. Checkpoints are not loaded (they are large, and only the best epochs are read:
ecg_ray.results.store.results). A bucket folder is downloaded once, by `load`.
"""

from __future__ import annotations

import json

from ecg_ray import storage
from ecg_ray.results.store.folder import (
    RECORD_FILES, TRIAL_PARAMS, TRIAL_RESULTS, ExperimentDir, TrialFiles, is_trial_file, parse_json, trial_files,
)


class FolderState(ExperimentDir):
    """An ExperimentDir answered from memory: what `load` read, plus everything written through it since."""

    def __init__(self, path: str, contents: dict[str, bytes | None], found: bool = True):
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_contents", contents)  # relative path -> bytes (None: known to be absent)
        object.__setattr__(self, "_found", found)  # the folder existed when it was loaded

    @classmethod
    def load(cls, exp: ExperimentDir | str) -> "FolderState":
        """Read the folder's records and trial files once (one listing; a missing folder is an empty state)."""
        if isinstance(exp, FolderState):
            return exp
        exp = exp if isinstance(exp, ExperimentDir) else ExperimentDir.parse(exp)
        listing = exp.listing()
        wanted = [rel for rel in listing if rel in RECORD_FILES or is_trial_file(rel)]
        return cls(exp.path, dict(zip(wanted, storage.read_many([exp.join(rel) for rel in wanted]))),
                   found=bool(listing) or storage.is_dir(exp.path))

    @property
    def found(self) -> bool:
        """Whether the folder exists: it did when loaded, or something was written through this state since."""
        return self._found or any(v is not None for v in self._contents.values())

    @property
    def folder(self) -> ExperimentDir:
        """The plain folder (paths only): what a Ray trial is given, never the loaded bytes."""
        return ExperimentDir(self.path)

    def __reduce__(self):  # shipped to a Ray actor (a searcher, a callback): the folder, not its bytes
        return ExperimentDir, (self.path,)

    def _read_json(self, name: str):
        return parse_json(self._contents.get(name), self.join(name))

    def _write_json(self, name: str, obj) -> None:
        self.write_bytes(self.join(name), storage.dumps(obj).encode())

    def write_bytes(self, path: str, data: bytes) -> None:
        storage.write_bytes(path, data)
        rel = self._relative(path)
        if rel is not None and (rel in RECORD_FILES or is_trial_file(rel)):
            self._contents[rel] = data

    def read_bytes(self, path: str) -> bytes:
        rel = self._relative(path)
        if rel is not None and self._contents.get(rel) is not None:
            return self._contents[rel]
        return storage.read_bytes(path)

    def _relative(self, path: str) -> str | None:
        prefix = self.path.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else None

    def remove(self) -> None:
        super().remove()
        self._contents.clear()
        object.__setattr__(self, "_found", False)

    def trials(self, problems: list[str] | None = None) -> list[TrialFiles]:
        """Every readable Tune trial folder, from memory (see ExperimentDir.trials)."""
        return trial_files(self, {rel: data for rel, data in self._contents.items() if is_trial_file(rel)}, problems)

    def reload_trials(self, names: list[str]) -> None:
        """Read again the trial folders `names` (Tune wrote them during this command)."""
        for name in names:
            for file in (TRIAL_PARAMS, TRIAL_RESULTS):
                self._contents[f"{name}/{file}"] = storage.read_optional(self.join(name, file))

    def snapshot_json(self) -> dict:
        """name -> parsed JSON of every top-level record held (for tests and debugging)."""
        return {rel: json.loads(data) for rel, data in self._contents.items() if "/" not in rel and data is not None}
