"""Records -> checked, split, padded float32 arrays + class weights, cached on disk.

    python -c "from ecg_ray.config import load_experiment; from ecg_ray.data.prepare import prepare; \
print(prepare(load_experiment('experiments/quick.yaml')).describe())"

Preparation follows the notebook: zeros appended to short signals, long ones
centre-trimmed, to `target_length` samples; labels 0..3; cross-entropy class
weights = sklearn's 'balanced' weights / their max, mapped to 0.5 + 0.5 w.
It runs once per experiment, never inside the training loop.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ecg_ray.errors import ConfigError, DataError
from ecg_ray.data.records import RecordSet
from ecg_ray.schema import CLASS_NAMES, LABEL_NAMES, NUM_CLASSES
from ecg_ray.data.sources import SOURCES, Source
from ecg_ray.storage import atomic_path

CACHE_VERSION = 1
MAX_LISTED_PROBLEMS = 10


def pad_or_trim(signals: list[np.ndarray], length: int) -> np.ndarray:
    """Stack signals into one (n, length) float32 array: zero-pad at the end, centre-trim long ones."""
    out = np.zeros((len(signals), length), dtype=np.float32)
    for i, s in enumerate(signals):
        n = len(s)
        if n >= length:
            start = (n - length) // 2
            out[i] = s[start : start + length]
        else:
            out[i, :n] = s
    return out


def class_weights(labels: np.ndarray) -> np.ndarray:
    """The notebook's loss weights: balanced / max -> 0.5 + 0.5 w, float32 of length 4."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if (counts == 0).any():
        empty = ", ".join(f"{CLASS_NAMES[c]} ({LABEL_NAMES[c]})" for c in np.flatnonzero(counts == 0))
        raise DataError(
            f"The training split has no records of class {empty}, so its class weight would divide by zero. "
            "Use data with every class present, or lower data.val_fraction / data.test_fraction."
        )
    from sklearn.utils.class_weight import compute_class_weight  # here: every trial's worker imports this module

    w = compute_class_weight("balanced", classes=np.arange(NUM_CLASSES), y=labels)
    return (0.5 + 0.5 * (w / w.max())).astype(np.float32)


@dataclass(frozen=True)
class DataMeta:
    """Where prepared data came from and how it was made; recorded in the experiment file.

    Attributes:
        source: the source's path or generator spec.
        fingerprint: the source's content fingerprint (part of the cache key).
        settings: every preparation setting (ecg_ray.data.prepare.preparation_settings).
        cache_key: the prepared-data cache entry.
        skipped: {"split", "record", "problem"} for each record dropped by on_bad_record: skip.
        lengths: min, max, median of the raw lengths; how many were padded and trimmed.
    """

    source: str
    fingerprint: str
    settings: dict
    cache_key: str
    skipped: tuple = ()
    lengths: dict | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["skipped"] = list(self.skipped)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "DataMeta":
        return cls(**{**raw, "skipped": tuple(raw.get("skipped", ()))})


@dataclass
class PreparedData:
    """Everything a trial reads: arrays per split, weights, and where they came from.

    Attributes:
        x: split -> (n, target_length) float32 signals.
        y: split -> (n,) int64 labels.
        ids: split -> record ids, in array order.
        weights: (4,) float32 class weights from the train split.
        data_hash: sha256 prefix over ids, arrays and labels of every split.
        meta: where the data came from and how it was prepared.
        whole: split -> (n, longest) float32 records whole, zero-padded at the end; only for
            experiments whose trials cut their own windows (see whole_records_needed).
        lengths: split -> (n,) int64 record lengths, beside `whole`.
    """

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    ids: dict[str, list[str]]
    weights: np.ndarray
    data_hash: str
    meta: DataMeta
    whole: dict[str, np.ndarray] | None = None
    lengths: dict[str, np.ndarray] | None = None

    def describe(self) -> str:
        parts = []
        total = sum(len(y) for y in self.y.values())
        for split in self.x:
            counts = np.bincount(self.y[split], minlength=NUM_CLASSES)
            parts.append(f"{split}: {len(self.y[split])} = {len(self.y[split]) / max(total, 1):.1%} of {total} ("
                         + " ".join(f"{n}={c}" for n, c in zip(LABEL_NAMES, counts)) + ")")
        return f"data {self.data_hash} from {self.meta.source}: " + "; ".join(parts)


def _amplitude_problem(where: str, sig: np.ndarray, cfg, fixed: bool = False) -> str | None:
    """A dead (flat) signal or one no ECG reaches, in ADC units at 1000 per mV; None when plausible.
    `fixed`: the limits are a model's (predict), which the user cannot change."""
    lo, hi = float(np.min(sig)), float(np.max(sig))
    if hi - lo < cfg.min_peak_to_peak:
        return (f"{where} is flat: {hi - lo:g} ADC units from its lowest to its highest sample, below "
                f"data.min_peak_to_peak={cfg.min_peak_to_peak:g} (1000 units per mV). A dead or disconnected lead, "
                "or a signal in mV instead of ADC units; remove the record, or fix its units")
    peak = max(abs(lo), abs(hi))
    if peak > cfg.max_abs_amplitude:
        return (f"{where} reaches {peak:g} ADC units ({peak / 1000:g} mV), beyond data.max_abs_amplitude="
                f"{cfg.max_abs_amplitude:g}: not a plausible ECG (a wrong gain, or a file read in the wrong format). "
                "Check the file" + ("" if fixed else ", or raise data.max_abs_amplitude if the amplitude is real"))
    return None


def check_records(splits: dict[str, RecordSet], cfg, skip_option: str | None = None
                  ) -> tuple[dict[str, RecordSet], list[tuple[str, str, str]]]:
    """Find bad records; raise DataError, or with on_bad_record=skip drop them.

    Returns the cleaned splits and (split, record, problem) for every dropped record. The limits are
    the experiment's `data:` keys, and the advice names them; with `skip_option` (predict's
    `--on-bad-record skip`) they are a model's, fixed, and the advice names that option instead.
    """
    fixed = skip_option is not None
    limit = (lambda key: f"the model's {key} ({{}}, from its training data)") if fixed else (lambda key: f"data.{key}={{}}")
    bad: list[tuple[str, str, str]] = []
    seen: dict[str, str] = {}
    contents: dict[bytes, tuple[str, str]] = {}  # signal digest -> (split, record): catches copies under new ids
    for split, rs in splits.items():
        for rec, msg in rs.problems:
            bad.append((split, rec, msg))
        dup_in_split = set()
        for rec, sig, lab in zip(rs.ids, rs.signals, rs.labels):
            where = f"{rs.file_of(rec)}: record {rec}"
            digest = hashlib.sha1(np.ascontiguousarray(sig, dtype=np.float64).tobytes()).digest()
            twin = contents.setdefault(digest, (split, rec))
            problem = None
            if rec in dup_in_split:
                problem = f"{where} appears twice; record ids must be unique. Remove the duplicate row"
            elif rec in seen:
                problem = f"{where} is in both the {_shown(seen[rec])} and the {split} split. Remove it from one of them"
            elif twin[0] != split and len(sig):
                problem = (f"{where} has the same signal as record {twin[1]} of the {_shown(twin[0])} split: the same "
                           f"record is in both splits. Remove it from one of them")
            elif not (float(lab).is_integer() and 0 <= lab < NUM_CLASSES):
                problem = f"{where} has label {lab:g}; labels must be 0..3 (0 Normal, 1 AF, 2 Other, 3 Noisy). Fix the label"
            elif len(sig) == 0:
                problem = f"{where} has an empty signal. Remove the record"
            elif not np.isfinite(sig).all():
                problem = f"{where} contains NaN or inf (first at sample {int(np.flatnonzero(~np.isfinite(sig))[0])}). Repair or remove the record"
            elif len(sig) < cfg.min_length:
                problem = (f"{where} has {len(sig)} samples, fewer than {limit('min_length').format(cfg.min_length)}. Remove it"
                           + ("" if fixed else " or lower data.min_length"))
            elif len(sig) > cfg.max_length:
                problem = (f"{where} has {len(sig)} samples ({len(sig) / cfg.sampling_rate:.0f} s at {cfg.sampling_rate} Hz), more "
                           f"than {limit('max_length').format(cfg.max_length)} (CinC 2017 records end at 18,286). Remove it"
                           + ("" if fixed else ", or raise data.max_length if the record is real"))
            else:
                problem = _amplitude_problem(where, sig, cfg, fixed)
            if problem:
                bad.append((split, rec, problem))
            dup_in_split.add(rec)
            seen.setdefault(rec, split)
    if bad and cfg.on_bad_record == "error":
        listed = "; ".join(p for _, _, p in bad[:MAX_LISTED_PROBLEMS])
        more = f" (and {len(bad) - MAX_LISTED_PROBLEMS} more)" if len(bad) > MAX_LISTED_PROBLEMS else ""
        raise DataError(
            f"{len(bad)} bad record(s) in the input: {listed}{more}. "
            f"To go on without them, {f'pass {skip_option}' if fixed else 'set `on_bad_record: skip` under `data:`'}: "
            "bad records are then dropped and listed."
        )
    drop = {(s, r) for s, r, _ in bad}
    cleaned = {}
    for split, rs in splits.items():
        keep = np.array([i for i, r in enumerate(rs.ids) if (split, r) not in drop], dtype=np.int64)
        sub = rs.subset(keep)
        sub.labels = sub.labels.astype(np.int64)
        cleaned[split] = sub
    return cleaned, bad


def _shown(split: str) -> str:
    return "train/val" if split == "all" else split  # "all" is split into train and val after the checks


def split_records(splits: dict[str, RecordSet], cfg, seed: int) -> dict[str, RecordSet]:
    """Stratified, seeded train/val(/test) split of a single set; a given train/val pair is kept.

    With `cfg.folds` K >= 2, the records left after the test split (or a given train/val pair
    together) are cut into K stratified folds instead, `fold0` ... `fold<K-1>`: each record in one
    (fold_view turns fold k into a trial's train and val).
    """
    from sklearn.model_selection import train_test_split  # here: every trial's worker imports this module

    if cfg.folds:
        return _folds(splits, cfg, seed)
    if "all" not in splits:
        return splits
    rs, given = splits["all"], {k: v for k, v in splits.items() if k != "all"}  # a given test set stays as it is
    idx = np.arange(len(rs))
    counts = rs.class_counts()
    try:
        out = {}
        if cfg.test_fraction > 0:
            idx, test = train_test_split(idx, test_size=cfg.test_fraction, stratify=rs.labels[idx], random_state=seed)
            out["test"] = np.sort(test)
        val_size = cfg.val_fraction / (1.0 - cfg.test_fraction)  # val_fraction is a share of all records, as test_fraction
        train, val = train_test_split(idx, test_size=val_size, stratify=rs.labels[idx], random_state=seed)
    except ValueError as err:
        raise DataError(
            f"{rs.source}: cannot make a stratified split of {len(rs)} records with class counts "
            f"{dict(zip(LABEL_NAMES, counts.tolist()))} ({err}). Use more records or change data.val_fraction / data.test_fraction."
        ) from None
    out = {"train": np.sort(train), "val": np.sort(val), **out}
    return {name: rs.subset(index) for name, index in out.items()} | given


FOLD = "fold"  # the splits of a cross-validated experiment: fold0, fold1, ...


def fold_names(k: int) -> list[str]:
    return [f"{FOLD}{i}" for i in range(k)]


def _folds(splits: dict[str, RecordSet], cfg, seed: int) -> dict[str, RecordSet]:
    from sklearn.model_selection import StratifiedKFold, train_test_split

    given_test = {k: v for k, v in splits.items() if k == "test"}
    if "all" in splits:
        rs, out = splits["all"], {}
        idx = np.arange(len(rs))
        if cfg.test_fraction > 0:
            try:
                idx, test = train_test_split(idx, test_size=cfg.test_fraction, stratify=rs.labels, random_state=seed)
            except ValueError as err:
                raise DataError(f"{rs.source}: cannot split off a stratified test split of {len(rs)} records ({err}). "
                                "Use more records or lower data.test_fraction.") from None
            out["test"] = rs.subset(np.sort(test))
        pool = rs.subset(np.sort(idx))
    else:  # a given train/val pair: cross-validated together
        pool, out = RecordSet.concat([splits["train"], splits["val"]]), {}
    counts = pool.class_counts()
    if counts.min() < cfg.folds:
        smallest = LABEL_NAMES[int(counts.argmin())]
        raise DataError(
            f"{pool.source}: data.folds is {cfg.folds}, but class {smallest} has only {int(counts.min())} record(s) in the "
            f"records cross-validated (class counts {dict(zip(LABEL_NAMES, counts.tolist()))}), so some fold would "
            "validate on none of it. " + (f"Use data.folds of at most {int(counts.min())}, or more records." if counts.min() >= 2
                                          else "Use more records: K-fold cross-validation needs at least 2 of each class."))
    folds = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=seed % 2**32)
    for name, (_, part) in zip(fold_names(cfg.folds), folds.split(np.zeros(len(pool)), pool.labels)):
        out[name] = pool.subset(np.sort(part))
    return out | given_test


def fold_view(data: "PreparedData", fold: int | None) -> "PreparedData":
    """What a trial of `fold` trains and validates on: every other fold (in fold order) as `train`,
    fold `fold` as `val`, the test split as it is, class weights from that train part; `data`
    itself for the single split (fold None). The data hash stays the whole data's."""
    if fold is None:
        return data
    names = [s for s in fold_names(len([k for k in data.x if k.startswith(FOLD)]))]
    if f"{FOLD}{fold}" not in data.x:
        raise DataError(f"This trial validates on fold {fold}, but the data has {len(names)} fold(s) "
                        f"({', '.join(names) or 'a single split'}): its experiment was made with other data.folds.")
    rest = [n for n in names if n != f"{FOLD}{fold}"]

    def pick(parts: dict | None, split: str):
        if parts is None:
            return None
        return parts[f"{FOLD}{fold}"] if split == "val" else np.concatenate([parts[n] for n in rest])

    x = {s: pick(data.x, s) for s in ("train", "val")} | ({"test": data.x["test"]} if "test" in data.x else {})
    y = {s: pick(data.y, s) for s in ("train", "val")} | ({"test": data.y["test"]} if "test" in data.y else {})
    ids = {"train": [r for n in rest for r in data.ids[n]], "val": list(data.ids[f"{FOLD}{fold}"])}
    ids |= {"test": data.ids["test"]} if "test" in data.ids else {}
    whole = lengths = None
    if data.whole is not None:
        whole = {s: pick(data.whole, s) for s in ("train", "val")} | ({"test": data.whole["test"]} if "test" in data.whole else {})
        lengths = {s: pick(data.lengths, s) for s in ("train", "val")} | (
            {"test": data.lengths["test"]} if "test" in data.lengths else {})
    return PreparedData(x, y, ids, class_weights(y["train"]), data.data_hash, data.meta, whole, lengths)


def content_hash(x: dict, y: dict, ids: dict) -> str:
    """Names the records, their split and their prepared arrays. The whole records some searches
    keep beside them come from the same records, so an experiment that keeps them has the same
    hash as one on the same data that does not (its cache key differs: `whole_records`)."""
    h = hashlib.sha256()
    for split in sorted(x):
        h.update(split.encode())
        h.update("\n".join(ids[split]).encode())
        h.update(np.ascontiguousarray(x[split]).tobytes())
        h.update(np.ascontiguousarray(y[split]).astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def whole_records_needed(exp) -> bool:
    """Whether a trial may cut its own windows (search.train_crop: random, or a target_length other
    than data.target_length), so the prepared data must keep every record whole."""
    space = exp.search_space
    return "random" in space.values("train_crop") or any(v not in (0, exp.data.target_length) for v in space.values("target_length"))


def centre_windows(whole: np.ndarray, lengths: np.ndarray, length: int) -> np.ndarray:
    """Each record padded or centre-trimmed to `length`, exactly as pad_or_trim does it."""
    return pad_or_trim([w[:n] for w, n in zip(whole, lengths)], length)


# The prepared arrays may take at most this share of the memory free now (the trials need the rest).
MEMORY_SHARE = 0.5


def _check_memory(exp, splits: dict, settings: dict) -> None:
    """Estimate the prepared arrays' size before allocating them; refuse what would not fit."""
    import psutil

    n = sum(len(rs.ids) for rs in splits.values())
    longest = max((int(rs.lengths().max()) for rs in splits.values() if len(rs.ids)), default=0)
    need = n * exp.data.target_length * 4
    how = f"{n} records x {exp.data.target_length} samples"
    if settings.get("whole_records"):
        width = max(longest, exp.search_space.largest("target_length"))
        need += n * width * 4
        how += f" + {n} whole records x the longest, {width} samples (kept for train_crop: random / other target_lengths)"
    free = psutil.virtual_memory().available
    if need > MEMORY_SHARE * free:
        raise DataError(f"The prepared data would take {need / 2**30:.2f} GiB ({how}, float32), more than the "
                        f"{MEMORY_SHARE * free / 2**30:.2f} GiB it may ({MEMORY_SHARE:.0%} of the {free / 2**30:.1f} GiB free on this "
                        f"machine; the trials need the rest). Lower data.max_length (now {exp.data.max_length}) "
                        "to drop long records, use fewer records, or keep train_crop: centre at data.target_length.")


def preparation_settings(exp) -> dict:
    """Every setting that changes the prepared arrays (part of the cache key and of checkpoints)."""
    d = exp.data
    return {
        "source": d.source, "target_length": d.target_length, "sampling_rate": d.sampling_rate,
        "min_length": d.min_length, "max_length": d.max_length, "val_fraction": d.val_fraction, "test_fraction": d.test_fraction,
        "test_path": d.test_path,
        "on_bad_record": d.on_bad_record, "n_records": d.n_records if d.source == "synthetic" else None,
        **({"difficulty": d.difficulty} if d.source == "synthetic" else {}),
        "min_peak_to_peak": d.min_peak_to_peak, "max_abs_amplitude": d.max_abs_amplitude,
        "seed": exp.seed, "version": CACHE_VERSION,
    } | ({"whole_records": True} if whole_records_needed(exp) else {}) | ({"folds": d.folds} if d.folds else {})


def cache_dir(exp) -> Path:
    return Path(os.path.expanduser(exp.data.cache_dir or os.environ.get("ECG_RAY_CACHE", "~/.cache/ecg_ray")))


def test_source(d) -> tuple[Source, object]:
    """The source and the DataConfig that read a given test set (data.test_path, `--test-data`)."""
    from ecg_ray.data.sources import guess_source

    name = guess_source(d.test_path)
    if name not in ("cinc2017", "parquet", "pickle"):
        raise ConfigError(f"data.test_path {d.test_path!r} is not a test set: pass a challenge folder, a .parquet or a .pkl file.")
    return SOURCES[name], replace(d, source=name, path=d.test_path, val_path=None, test_path=None, test_fraction=0.0)


def read_sets(exp) -> dict[str, RecordSet]:
    """The source's record sets, with the given test set (if any) as "test"."""
    sets = SOURCES[exp.data.source].load(exp.data, exp.seed)
    if exp.data.test_path:
        source, d = test_source(exp.data)
        (test,) = source.load(d, exp.seed).values()
        sets["test"] = test
    return sets


def fingerprint(exp) -> str:
    """The input's content fingerprint: the source's, and the given test set's."""
    fp = SOURCES[exp.data.source].fingerprint(exp.data, exp.seed)
    if exp.data.test_path:
        source, d = test_source(exp.data)
        fp = hashlib.sha256(f"{fp}:test:{source.fingerprint(d, exp.seed)}".encode()).hexdigest()
    return fp


def read_checked(exp) -> tuple[dict[str, RecordSet], list]:
    """Read the source and check every record. Returns (the source's sets, dropped records)."""
    return check_records(read_sets(exp), exp.data)


def load_records(exp) -> tuple[dict[str, RecordSet], list]:
    """Read the source, check every record, split. Returns (splits, dropped records)."""
    checked, dropped = read_checked(exp)
    return split_records(checked, exp.data, exp.seed), dropped


def prepare(exp, use_cache: bool = True) -> PreparedData:
    """Load, check, split, pad/trim and weight the data of an experiment, through the disk cache.

    The cache key is the source's content fingerprint plus every preparation
    setting; a cache file is written atomically, so it is whole or absent.
    """
    settings = preparation_settings(exp)
    fp = fingerprint(exp)
    key = hashlib.sha256((fp + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:24]
    path = cache_dir(exp) / f"{key}.npz"
    if use_cache and path.is_file():
        try:
            return _read_cache(path)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    splits, dropped = load_records(exp)
    _check_memory(exp, splits, settings)
    x = {s: pad_or_trim(rs.signals, exp.data.target_length) for s, rs in splits.items()}
    y = {s: rs.labels.astype(np.int64) for s, rs in splits.items()}
    ids = {s: list(rs.ids) for s, rs in splits.items()}
    lengths = np.concatenate([splits[s].lengths() for s in splits])
    meta = DataMeta(
        source=next(iter(splits.values())).source,
        fingerprint=fp,
        settings=settings,
        cache_key=key,
        skipped=tuple({"split": s, "record": r, "problem": p} for s, r, p in dropped),
        lengths={"min": int(lengths.min()), "max": int(lengths.max()), "median": float(np.median(lengths)),
                 "padded": int((lengths < exp.data.target_length).sum()), "trimmed": int((lengths > exp.data.target_length).sum())},
    )
    try:  # with folds, of every record cross-validated (each fold's trials weigh their own train part)
        weights = class_weights(y["train"] if "train" in y else np.concatenate([y[s] for s in y if s.startswith(FOLD)]))
    except DataError as err:
        raise DataError(f"{meta.source}: {err}") from None
    whole = lengths_by = None
    if settings.get("whole_records"):
        lengths_by = {s: rs.lengths().astype(np.int64) for s, rs in splits.items()}
        width = max(int(lengths.max()), exp.search_space.largest("target_length"))
        whole = {s: pad_or_trim(rs.signals, width) for s, rs in splits.items()}
    data = PreparedData(x, y, ids, weights, content_hash(x, y, ids), meta, whole, lengths_by)
    if use_cache:
        _write_cache(path, data)
    return data


def _write_cache(path: Path, data: PreparedData) -> None:
    arrays = {f"x_{s}": a for s, a in data.x.items()} | {f"y_{s}": a for s, a in data.y.items()}
    if data.whole is not None:
        arrays |= {f"whole_{s}": a for s, a in data.whole.items()} | {f"lengths_{s}": a for s, a in data.lengths.items()}
    header = {"ids": data.ids, "weights": data.weights.tolist(), "data_hash": data.data_hash, "meta": data.meta.to_dict()}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, header=np.array(json.dumps(header)), **arrays)
    except OSError:
        pass  # a cache that cannot be written only costs time on the next run


def _read_cache(path: Path) -> PreparedData:
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        splits = list(header["ids"])
        x = {s: z[f"x_{s}"] for s in splits}
        y = {s: z[f"y_{s}"] for s in splits}
        whole = {s: z[f"whole_{s}"] for s in splits} if f"whole_{splits[0]}" in z else None
        lengths = {s: z[f"lengths_{s}"] for s in splits} if whole is not None else None
    data = PreparedData(x, y, header["ids"], np.asarray(header["weights"], dtype=np.float32), header["data_hash"],
                        DataMeta.from_dict(header["meta"]), whole, lengths)
    if content_hash(data.x, data.y, data.ids) != data.data_hash:
        raise ValueError("cache content does not match its hash")
    return data
