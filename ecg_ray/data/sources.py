"""Data sources, one registry: where records come from and how each format is read.

    ecg-ray data check ../shared/data/cinc2017-sample

Every source returns {"all": RecordSet} (one set, split later) or
{"train": ..., "val": ...} (a split the user made). Signals come back in ADC
units at 1000 per mV, the unit of AliveCor's files and of the notebook's pickles.

Security: a pickle file runs code from the file when it is loaded. Only load
pickles you made yourself; `ecg-ray data convert` turns one into Parquet once.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import struct
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ecg_ray.errors import ConfigError, DataError
from ecg_ray.data.records import RecordSet
from ecg_ray.schema import LABEL_NAMES

PICKLE_WARNING = (
    "Loading a pickle runs code stored in the file: only load pickles you trust. "
    "Convert once with `ecg-ray data convert FILE.pkl FILE.parquet --trust-pickle FILE.pkl` and use the Parquet file."
)


@dataclass(frozen=True)
class Source:
    """A registered data source. What it requires of the config is ecg_ray.config.SOURCE_RULES.

    Attributes:
        load: (DataConfig, seed) -> {"all": RecordSet} or {"train": ..., "val": ...}; records
            that could not be read are listed in RecordSet.problems, not raised.
        fingerprint: (DataConfig, seed) -> str that changes whenever the input's content changes.
    """

    load: Callable
    fingerprint: Callable


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(Path(p).name).encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def _require(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} {path} does not exist. {fix}")
    return path


def _pair(cfg) -> list[tuple[str, Path]]:
    files = [("train" if cfg.val_path else "all", Path(cfg.path))]
    if cfg.val_path:
        files.append(("val", Path(cfg.val_path)))
    for _, p in files:
        _require(p, "Data file", "Check data.path / data.val_path in the experiment file or --data on the command line.")
    return files


# --- synthetic -------------------------------------------------------------


def _load_synthetic(cfg, seed: int) -> dict:
    from ecg_ray.data.synthetic import generate

    return {"all": generate(cfg.n_records, seed=seed, fs=cfg.sampling_rate, difficulty=cfg.difficulty)}


def _fingerprint_synthetic(cfg, seed: int) -> str:
    from ecg_ray.data import synthetic

    code = Path(synthetic.__file__).read_bytes()  # a change to the generator invalidates caches
    return hashlib.sha256(code + f"{cfg.n_records}:{seed}:{cfg.sampling_rate}:{cfg.difficulty}".encode()).hexdigest()


# --- the challenge's folder (training2017/) --------------------------------


def challenge_files(folder: Path) -> tuple[Path, list[tuple[str, str]]]:
    _require(folder, "Data folder", "Point data.path (or --data) at the unzipped training2017/ folder.")
    ref = _require(folder / "REFERENCE.csv", "Label file", "The challenge folder must hold REFERENCE.csv with `record,label` rows.")
    rows = []
    # utf-8-sig: a file saved by Excel starts with a byte-order mark that is not part of the first record id.
    for lineno, line in enumerate(ref.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0]:
            raise DataError(f"{ref}, line {lineno}: expected `record,label`, got {line!r}. Fix or delete that line.")
        if not rows and _is_header(folder, *parts):
            continue  # a header row such as `data_source,class` in public copies of the file
        rows.append((parts[0], parts[1]))
    return ref, rows


def _is_header(folder: Path, record: str, label: str) -> bool:
    """A first row that is column names: no valid label and no such record in the folder."""
    return label not in LABEL_NAMES and not (folder / f"{record}.hea").exists() and not (folder / f"{record}.mat").exists()


def _fingerprint_challenge(cfg, seed: int) -> str:
    folder = Path(cfg.path)
    ref, rows = challenge_files(folder)
    files = [ref] + sorted(p for p in folder.iterdir() if p.suffix in (".mat", ".hea"))
    return _hash_files(files)


PARALLEL_FROM = 2000  # records; below this, starting worker processes costs more than it saves


def _read_wfdb(folder: Path, record: str, expected_fs: int):
    """(float32 signal in ADC units at 1000/mV, None) or (None, problem)."""
    import wfdb

    base = folder / record
    for ext in (".hea", ".mat"):
        if not base.with_suffix(ext).is_file():
            return None, f"{base.with_suffix(ext)} is missing (REFERENCE.csv names record {record})"
    problem = _not_matlab_v4(base.with_suffix(".mat"), record)
    if problem:
        return None, problem
    try:
        rec = wfdb.rdrecord(str(base), physical=True)
    except Exception as err:  # wfdb raises many types for damaged files
        return None, f"{base}.mat/.hea cannot be read ({type(err).__name__}: {err}); the file is damaged or truncated"
    if rec.p_signal is None or rec.p_signal.ndim != 2 or rec.p_signal.shape[1] < 1:
        return None, f"{base}.mat holds no signal"
    if rec.fs != expected_fs:
        return None, f"{base}.hea says {rec.fs:g} Hz but the experiment expects data.sampling_rate={expected_fs}"
    held = _mat_v4_values(base.with_suffix(".mat"))
    if held is not None and held != rec.sig_len * rec.n_sig:  # wfdb reads the header's count, dropping the rest unsaid
        what = "truncated" if held < rec.sig_len * rec.n_sig else "the header would drop the rest"
        return None, (f"{base}.mat holds {held // max(rec.n_sig, 1)} samples but {base}.hea says {rec.sig_len}: header "
                      f"and signal disagree ({what}); fix the sample count in the header's first line or re-export the record")
    if rec.p_signal.shape[0] != rec.sig_len:
        return None, f"{base}.mat holds {rec.p_signal.shape[0]} samples but its header says {rec.sig_len}: truncated"
    units = (rec.units or ["mV"])[0]
    scale = {"mV": 1000.0, "uV": 1.0, "V": 1e6}.get(units)
    if scale is None:
        return None, f"{base}.hea gives units {units!r}; expected mV, uV or V"
    return (rec.p_signal[:, 0] * scale).astype(np.float32), None


def _mat_v4_values(mat: Path) -> int | None:
    """How many values the MATLAB v4 file's matrix holds (rows x columns of its header), or None when its
    header does not parse as v4. A v4 header is five int32: type, rows, columns, imaginary, name length."""
    with open(mat, "rb") as f:
        head = f.read(20)
    if len(head) < 20:
        return None
    for order in ("<", ">"):  # the type's thousands digit says which; try both
        kind, rows, cols, imag, namelen = struct.unpack(f"{order}5i", head)
        if 0 <= kind <= 4052 and rows >= 0 and cols >= 0 and imag in (0, 1) and 0 < namelen < 64:
            return rows * cols
    return None


def _not_matlab_v4(mat: Path, record: str) -> str | None:
    """The challenge's .mat files are MATLAB v4 (no text header). A v5/v7 or v7.3 (HDF5) file would
    be read as raw int16 samples from the .hea's byte offset: garbage that looks like an ECG."""
    with open(mat, "rb") as f:
        head = f.read(520)
    if head.startswith(b"MATLAB 7.3") or head[512:520] == b"\x89HDF\r\n\x1a\n":
        kind = "a MATLAB v7.3 (HDF5)"
    elif head.startswith(b"MATLAB"):
        kind = f"a MATLAB {head[7:10].decode(errors='replace')} (v5/v7)"
    else:
        return None
    return (f"{mat} is {kind} file, but the challenge's records are MATLAB v4, the format its .hea header "
            f"describes; read as v4 its bytes would become garbage samples. Re-save it as v4: in MATLAB "
            f"`save('{record}.mat', 'val', '-v4')`, in Python `scipy.io.savemat('{record}.mat', {{'val': val}}, format='4')`")


def _load_challenge(cfg, seed: int) -> dict:
    return {"all": read_labelled_folder(Path(cfg.path), cfg.sampling_rate)}


def read_labelled_folder(folder: Path, fs: int) -> RecordSet:
    """The records REFERENCE.csv labels, read as every command reads them: a label that is not
    N, A, O or ~ and a .mat without a label are bad records (listed in `problems`), never guessed."""
    ref, rows = challenge_files(folder)
    letters = {letter: i for i, letter in enumerate(LABEL_NAMES)}
    problems, ids, labels = [], [], []
    for rec, letter in rows:
        if letter not in letters:
            problems.append((rec, f"{ref}: record {rec} has unknown label {letter!r}; allowed: N, A, O, ~"))
        else:
            ids.append(rec)
            labels.append(letters[letter])
    labelled = {r for r, _ in rows}
    for mat in sorted(folder.glob("*.mat")):
        if mat.stem not in labelled:
            problems.append((mat.stem, f"{mat} has no label in {ref}; add a `{mat.stem},<N|A|O|~>` row or remove the file"))
    rs = read_records(folder, ids, labels, fs)
    rs.problems[:0] = problems  # label problems first, as REFERENCE.csv lists them
    return rs


def read_records(folder: Path, ids: list[str], labels: list[int], fs: int) -> RecordSet:
    """The named records of a challenge-layout folder, read with wfdb (in worker processes from
    PARALLEL_FROM records on); a record that cannot be read is listed in `problems`, not raised."""
    read = functools.partial(_read_wfdb, folder, expected_fs=fs)
    workers = min(os.cpu_count() or 1, 16)
    if len(ids) >= PARALLEL_FROM and workers > 1:
        # Parsing headers is Python work that holds the GIL: use processes. forkserver, not
        # fork: the caller may already run threads (Ray, gRPC) that a fork would copy half-way.
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            results = list(pool.map(read, ids, chunksize=max(1, len(ids) // (workers * 8))))
    else:
        results = [read(r) for r in ids]
    keep_ids, signals, keep_labels, problems = [], [], [], []
    for rec, lab, (sig, problem) in zip(ids, labels, results):
        if problem:
            problems.append((rec, problem))
        else:
            keep_ids.append(rec)
            signals.append(sig)
            keep_labels.append(lab)
    rs = RecordSet(keep_ids, signals, np.asarray(keep_labels, dtype=np.int64), fs, str(folder))
    rs.problems.extend(problems)
    return rs


# --- the notebook's pickles --------------------------------------------------


def frame_to_records(df, path: Path, fs: int) -> RecordSet:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{path} holds a {type(df).__name__}, not a pandas DataFrame. Save the notebook's DataFrame (columns `signal`, `label`).")
    missing = [c for c in ("signal", "label") if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)}; it has {', '.join(map(str, df.columns))}. "
            "A data file needs a `signal` column (1-D arrays) and a `label` column (0..3)."
        )
    if "record" in df.columns:
        ids = [str(x) for x in df["record"]]
    else:  # the notebook's frames have only a row index, restarting at 0 in each file
        ids = [f"{path.stem}:{x}" for x in df.index]
    try:
        labels = df["label"].to_numpy().astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: the `label` column holds non-numbers; labels must be ints 0..3 (0 Normal, 1 AF, 2 Other, 3 Noisy).") from None
    if len(df) and all(isinstance(v, (str, bytes)) for v in df["signal"]):
        raise DataError(
            f"{path}: the `signal` column holds text ({_shown(df['signal'].iloc[0])}), not arrays of numbers. Store each "
            "signal as a list of numbers, e.g. re-create the file with `ecg-ray data convert`."
        )
    keep, signals, problems = [], [], []
    for i, (rec, value) in enumerate(zip(ids, df["signal"])):
        signal, problem = _one_lead(value, f"{path}: record {rec}")
        if problem:
            problems.append((rec, problem))
        else:
            keep.append(i)
            signals.append(signal)
    rs = RecordSet([ids[i] for i in keep], signals, labels[keep], fs, str(path))
    rs.problems.extend(problems)
    return rs


def _shown(value) -> str:
    """A value's type and the start of its repr: enough to recognise it, never a whole signal."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:40] + '...'}"


def _one_lead(value, where: str) -> tuple[np.ndarray | None, str | None]:
    """(1-D float64 signal, None) or (None, problem) for one cell of a `signal` column."""
    if value is None:
        return np.zeros(0), None
    try:
        signal = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        try:  # Parquet gives a 2-D array back as an array of row arrays
            signal = np.stack([np.asarray(row, dtype=np.float64) for row in value])
        except (TypeError, ValueError):
            return None, f"{where} has a signal that is not numbers ({_shown(value)}); signals must be arrays of numbers"
    if sum(n > 1 for n in signal.shape) > 1:
        return None, (f"{where} has a {signal.ndim}-D signal of shape {signal.shape}, but ecg_ray takes single-lead "
                      "1-D signals. Keep one lead (e.g. signal[0]) when you build the file")
    return signal.ravel(), None


def _load_frames(cfg, read, fmt: str, fix: str, check=None) -> dict:
    """Read data.path (and data.val_path) with `read` into RecordSets; errors name the file and `fix`."""
    out = {}
    for split, path in _pair(cfg):
        try:
            df = read(path)
        except Exception as err:
            raise DataError(f"{path} cannot be read as {fmt} ({type(err).__name__}: {err}). {fix}") from None
        if check:
            check(df, path)
        out[split] = frame_to_records(df, path, cfg.sampling_rate)
    return out


def _load_pickle(cfg, seed: int) -> dict:
    return _load_frames(cfg, pd.read_pickle, "a pickle", "Re-save it with DataFrame.to_pickle.")


# --- Parquet -----------------------------------------------------------------


def _require_record_column(df, path: Path) -> None:
    if "record" not in df.columns:
        raise DataError(f"{path} lacks the `record` column (record ids); it has {', '.join(df.columns)}. Re-create it with `ecg-ray data convert`.")


def _load_parquet(cfg, seed: int) -> dict:
    return _load_frames(cfg, pd.read_parquet, "Parquet", "Re-create it with `ecg-ray data convert`.", _require_record_column)


def _fingerprint_pair(cfg, seed: int) -> str:
    return _hash_files([p for _, p in _pair(cfg)])


SOURCES: dict[str, Source] = {
    "synthetic": Source(_load_synthetic, _fingerprint_synthetic),
    "cinc2017": Source(_load_challenge, _fingerprint_challenge),
    "pickle": Source(_load_pickle, _fingerprint_pair),
    "parquet": Source(_load_parquet, _fingerprint_pair),
}


def guess_source(path: str) -> str:
    """The source name for a path given on the command line (`--data PATH` or a source name)."""
    if path in SOURCES:
        return path
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"{path} does not exist. Pass the unzipped training2017/ folder, a .pkl or .parquet file, "
            f"or one of the source names {', '.join(sorted(SOURCES))}."
        )
    if p.is_dir():
        return "cinc2017"
    if p.suffix in (".pkl", ".pickle"):
        return "pickle"
    if p.suffix in (".parquet", ".pq"):
        return "parquet"
    raise ConfigError(
        f"Cannot tell the data source of {path!r}: pass a folder in the challenge layout, a .pkl or .parquet file, "
        f"or one of the source names {', '.join(sorted(SOURCES))}."
    )


def write_parquet(records: RecordSet, dest: str | os.PathLike) -> None:
    """Write records as Parquet (record, signal as a list column, label), atomically."""
    from ecg_ray.storage import atomic_path

    df = pd.DataFrame(
        {
            "record": records.ids,
            "signal": [np.asarray(s, dtype=np.float32) for s in records.signals],
            "label": records.labels.astype(np.int64),
        }
    )
    with atomic_path(dest) as tmp:
        df.to_parquet(tmp, index=False)
