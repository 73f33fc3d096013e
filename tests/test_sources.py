"""Every data source on real shared samples and on files written here; bad input never gets through."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.io

from ecg_ray.commands.main import main
from ecg_ray.config import load_experiment
from ecg_ray.data.prepare import prepare
from ecg_ray.errors import DataError
from ecg_ray.data.records import RecordSet
from ecg_ray.data.sources import SOURCES, write_parquet
from ecg_ray.data.synthetic import generate
from helpers import frame, write_challenge, write_pickle


def _base(n=80, seed=3) -> RecordSet:
    rs = generate(n, seed=seed, difficulty="easy")
    rs.ids = [f"A{i:05d}" for i in range(n)]
    return rs


def _cfg(source, path=None, val_path=None, cache=None, **data):
    overrides = {"data.source": source, "data.path": str(path) if path else None, "data.val_path": str(val_path) if val_path else None}
    overrides |= {f"data.{k}": v for k, v in data.items()}
    if source == "pickle":
        overrides["data.trust_pickle"] = True  # our own files
    if cache:
        overrides["data.cache_dir"] = str(cache)
    return load_experiment("experiments/quick.yaml", **overrides)


# --- the real shared samples -----------------------------------------------------


def test_challenge_folder_real_sample(cinc_sample):
    (rs,) = SOURCES["cinc2017"].load(_cfg("cinc2017", cinc_sample).data, 42).values()
    np.testing.assert_array_equal(rs.class_counts(), [592, 87, 288, 33])
    assert len(rs) == 1000 and rs.fs == 300 and not rs.problems
    raw = scipy.io.loadmat(cinc_sample / f"{rs.ids[0]}.mat")["val"][0]
    np.testing.assert_allclose(rs.signals[0], raw)  # ADC units, gain 1000/mV from the header


def test_challenge_folder_prepares_with_stratified_split(cinc_sample, tmp_path):
    data = prepare(_cfg("cinc2017", cinc_sample, cache=tmp_path))
    assert [len(data.y[s]) for s in ("train", "val")] == [800, 200]
    np.testing.assert_array_equal(np.bincount(data.y["val"]), [118, 17, 58, 7])
    assert data.x["train"].shape == (800, 9000) and data.x["train"].dtype == np.float32


def test_notebook_pickles_load_as_train_and_val(seed_pickles, tmp_path):
    data = prepare(_cfg("pickle", seed_pickles / "train_df.pkl", seed_pickles / "val_df.pkl", cache=tmp_path))
    assert [len(data.y[s]) for s in ("train", "val")] == [160, 40]
    np.testing.assert_array_equal(np.bincount(data.y["train"]), [94, 14, 46, 6])
    assert data.ids["val"][0] == "val_df:0"
    df = pd.read_pickle(seed_pickles / "train_df.pkl")
    n = min(9000, len(df.signal[0]))
    np.testing.assert_allclose(data.x["train"][0, :n], df.signal[0][:n].astype(np.float32))


def test_data_check_prints_counts_and_lengths(cinc_sample, capsys):
    assert main(["data", "check", str(cinc_sample)]) == 0
    out = capsys.readouterr().out
    assert "N=592  A=87  O=288  ~=33" in out
    assert "118 padded with zeros, 691 exact, 191 centre-trimmed" in out
    assert "Problems: 0 (none)" in out


# --- every registered source, one contract ---------------------------------------


def _make(source, tmp_path, rs):
    if source == "synthetic":
        return _cfg("synthetic", n_records=len(rs))
    if source == "cinc2017":
        return _cfg(source, write_challenge(tmp_path / "training2017", rs))
    if source == "pickle":
        return _cfg(source, write_pickle(tmp_path / "all.pkl", rs))
    path = tmp_path / "all.parquet"
    write_parquet(rs, path)
    return _cfg(source, path)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_contract(source, tmp_path):
    rs = _base(80)
    cfg = _make(source, tmp_path, rs)
    splits = SOURCES[source].load(cfg.data, cfg.seed)
    assert set(splits) in ({"all"}, {"train", "val"})
    loaded = RecordSet.concat(list(splits.values()))
    assert len(loaded) == 80 and len(set(loaded.ids)) == 80
    assert loaded.labels.min() >= 0 and loaded.labels.max() <= 3
    if source != "synthetic":  # files hold exactly what was written (int16 ADC values)
        np.testing.assert_array_equal(loaded.labels, rs.labels)
        np.testing.assert_allclose(loaded.signals[5], np.round(rs.signals[5]), atol=0.5)
    fp = SOURCES[source].fingerprint(cfg.data, cfg.seed)
    assert fp == SOURCES[source].fingerprint(cfg.data, cfg.seed)
    cached = prepare(cfg)
    assert cached.data_hash == prepare(cfg).data_hash


def test_fingerprint_follows_content(tmp_path):
    folder = write_challenge(tmp_path / "t", _base(40))
    cfg = _cfg("cinc2017", folder)
    before = SOURCES["cinc2017"].fingerprint(cfg.data, 42)
    (folder / "REFERENCE.csv").write_text((folder / "REFERENCE.csv").read_text().replace(",N\n", ",O\n", 1))
    assert SOURCES["cinc2017"].fingerprint(cfg.data, 42) != before


def test_convert_to_parquet_round_trips(tmp_path):
    rs = _base(60)
    src = write_pickle(tmp_path / "train.pkl", rs)
    dest = tmp_path / "train.parquet"
    assert main(["data", "convert", str(src), str(dest), "--trust-pickle", str(src)]) == 0
    df = pd.read_parquet(dest)
    assert list(df.columns) == ["record", "signal", "label"] and len(df) == 60
    a = prepare(_cfg("pickle", src, cache=tmp_path / "c1"))
    b = prepare(_cfg("parquet", dest, cache=tmp_path / "c2"))
    for split in a.x:
        np.testing.assert_array_equal(a.x[split], b.x[split])
        np.testing.assert_array_equal(a.y[split], b.y[split])


# --- bad input: refused before any trial, nothing half-written ---------------------


def _challenge(tmp_path, edit=None, n=120):
    rs = _base(n)
    folder = write_challenge(tmp_path / "training2017", rs)
    if edit:
        edit(folder, rs)
    return [str(folder)]


def _pickles(tmp_path, train_edit=None, val_edit=None, obj=None):
    rs = _base(100)
    train_df, val_df = frame(rs.subset(np.arange(80))), frame(rs.subset(np.arange(80, 100)))
    train_df = train_edit(train_df) if train_edit else train_df
    val_df = val_edit(val_df) if val_edit else val_df
    train_df.to_pickle(tmp_path / "train_df.pkl")
    val_df.to_pickle(tmp_path / "val_df.pkl")
    if obj is not None:
        with open(tmp_path / "train_df.pkl", "wb") as f:
            pickle.dump(obj, f)
    train, val = str(tmp_path / "train_df.pkl"), str(tmp_path / "val_df.pkl")
    return [train, "--val-data", val, "--trust-pickle", train, "--trust-pickle", val]


def _set_signal(row, value):
    def edit(df):
        df.at[row, "signal"] = value
        return df

    return edit


def _truncate(name, keep=100):
    def edit(folder, rs):
        p = folder / name
        p.write_bytes(p.read_bytes()[:keep])

    return edit


def _rewrite(name, old, new):
    def edit(folder, rs):
        p = folder / name
        p.write_text(p.read_text().replace(old, new, 1))

    return edit


def _declare_samples(name, fraction):
    """Rewrite the sample count on the header's first line (`REC 1 300 N ...`) to `fraction` of it."""
    def edit(folder, rs):
        p = folder / name
        first, *rest = p.read_text().split("\n")
        fields = first.split(" ")
        fields[3] = str(int(int(fields[3]) * fraction))
        p.write_text("\n".join([" ".join(fields), *rest]))

    return edit


def _shorten(record, n):
    def edit(folder, rs):
        reference = (folder / "REFERENCE.csv").read_text()
        write_challenge(folder, RecordSet([record], [np.ones(n)], np.array([0]), 300, "short"))
        (folder / "REFERENCE.csv").write_text(reference)

    return edit


def _resave(record, fmt):
    """Replace a record's .mat with the same samples in another MATLAB format."""
    def edit(folder, rs):
        val = scipy.io.loadmat(folder / f"{record}.mat")["val"]
        if fmt == "7.3":  # MATLAB's v7.3 layout: a 512-byte text header, then an HDF5 file
            head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Nov 23 10:00:00 2026 HDF5 schema 1.00 ."
            (folder / f"{record}.mat").write_bytes(head.ljust(512) + b"\x89HDF\r\n\x1a\n" + val.tobytes())
        else:
            scipy.io.savemat(folder / f"{record}.mat", {"val": val}, format=fmt)

    return edit


def _parquet_with_text_signal(folder):
    rs = _base(100)
    df = frame(rs).assign(record=rs.ids)
    df["signal"] = df["signal"].map(lambda s: ",".join(map(str, s)))  # CSV text where arrays belong
    df.to_parquet(folder / "text.parquet")
    return [str(folder / "text.parquet")]


def _parquet_with_two_leads(folder):
    rs = _base(100)
    df = frame(rs).assign(record=rs.ids).head(3)  # Parquet takes one shape per column: all three have two leads
    df["signal"] = [[list(s), list(s)] for s in df["signal"]]  # stored as a list of rows
    df.to_parquet(folder / "leads.parquet")
    return [str(folder / "leads.parquet")]


BAD_INPUTS = {
    "missing folder": (lambda t: [str(t / "nope")], ["nope does not exist", "training2017/ folder"]),
    "missing REFERENCE.csv": (lambda t: _challenge(t, lambda f, rs: (f / "REFERENCE.csv").unlink()), ["REFERENCE.csv does not exist", "record,label"]),
    "label without .mat": (lambda t: _challenge(t, lambda f, rs: (f / "A00003.mat").unlink()), ["A00003.mat is missing", "REFERENCE.csv names record A00003"]),
    ".mat without label": (lambda t: _challenge(t, _rewrite("REFERENCE.csv", "A00004,", "X_dropped,")), ["A00004.mat has no label in", "add a `A00004,<N|A|O|~>` row"]),
    "truncated .mat": (lambda t: _challenge(t, _truncate("A00005.mat")), ["A00005.mat/.hea cannot be read", "damaged or truncated"]),
    "header declares fewer samples than the .mat holds": (lambda t: _challenge(t, _declare_samples("A00009.hea", 0.5)),
                                                          ["A00009.mat holds", "A00009.hea says", "header and signal disagree (the header would drop the rest)"]),
    "header declares more samples than the .mat holds": (lambda t: _challenge(t, _declare_samples("A00009.hea", 2)),
                                                         ["A00009", "truncated"]),
    "unreadable .hea": (lambda t: _challenge(t, lambda f, rs: (f / "A00006.hea").write_text("garbage\n")), ["A00006.mat/.hea cannot be read"]),
    "wrong sampling rate": (lambda t: _challenge(t, _rewrite("A00007.hea", " 300 ", " 500 ")), ["A00007.hea says 500 Hz", "data.sampling_rate=300"]),
    "unknown label letter": (lambda t: _challenge(t, _rewrite("REFERENCE.csv", "A00008,", "A00008,X\nZZ,")), ["record A00008 has unknown label 'X'", "allowed: N, A, O, ~"]),
    "duplicate record ids": (lambda t: _challenge(t, lambda f, rs: open(f / "REFERENCE.csv", "a").write("A00009,N\n")), ["record A00009 appears twice", "Remove the duplicate row"]),
    "too short": (lambda t: _challenge(t, _shorten("A00010", 1000)), ["A00010.mat: record A00010 has 1000 samples, fewer than data.min_length=2700"]),
    "NaN in a signal": (lambda t: _pickles(t, _set_signal(2, np.array([1.0, np.nan] * 2000))), ["train_df.pkl: record train_df:2 contains NaN or inf"]),
    "inf in a signal": (lambda t: _pickles(t, val_edit=_set_signal(1, np.array([1.0, np.inf] * 2000))), ["val_df.pkl: record val_df:1 contains NaN or inf"]),
    "empty signal": (lambda t: _pickles(t, _set_signal(3, np.zeros(0))), ["record train_df:3 has an empty signal"]),
    "label outside 0..3": (lambda t: _pickles(t, lambda df: df.assign(label=[7] + list(df.label[1:]))), ["record train_df:0 has label 7;", "labels must be 0..3"]),
    "same record in train and val": (lambda t: _pickles(t, val_edit=lambda df: pd.concat([df, frame(_base(100).subset(np.array([5])))], ignore_index=True)), ["record val_df:20 has the same signal as record train_df:5", "in both splits"]),
    "class without training records": (lambda t: _pickles(t, lambda df: df[df.label != 3]), ["train_df.pkl", "no records of class Noisy (~)", "divide by zero"]),
    "pickle not a DataFrame": (lambda t: _pickles(t, obj={"signal": [1, 2]}), ["train_df.pkl holds a dict, not a pandas DataFrame"]),
    "pickle lacks label": (lambda t: _pickles(t, lambda df: df.drop(columns="label")), ["train_df.pkl lacks the column(s) label", "a `label` column (0..3)"]),
    "unreadable pickle": (lambda t: (t / "x.pkl").write_bytes(b"not a pickle") and [str(t / "x.pkl"), "--trust-pickle", str(t / "x.pkl")], ["x.pkl cannot be read as a pickle"]),
    "MATLAB v7.3 (HDF5) .mat": (lambda t: _challenge(t, _resave("A00011", "7.3")), ["A00011.mat is a MATLAB v7.3 (HDF5) file", "MATLAB v4", "-v4"]),
    "MATLAB v5 .mat": (lambda t: _challenge(t, _resave("A00012", "5")), ["A00012.mat is a MATLAB 5.0 (v5/v7) file", "format='4'"]),
    "two leads, leads first": (lambda t: _pickles(t, _set_signal(4, np.ones((2, 9000)))), ["train_df.pkl: record train_df:4 has a 2-D signal of shape (2, 9000)", "Keep one lead"]),
    "two leads, samples first": (lambda t: _pickles(t, _set_signal(4, np.ones((9000, 2)))), ["record train_df:4 has a 2-D signal of shape (9000, 2)"]),
    "flat line": (lambda t: _pickles(t, _set_signal(6, np.zeros(9000))), ["record train_df:6 is flat", "data.min_peak_to_peak=50", "dead or disconnected lead"]),
    "signal in mV": (lambda t: _pickles(t, _set_signal(6, np.sin(np.arange(9000) / 50))), ["record train_df:6 is flat", "mV instead of ADC units"]),
    "implausible amplitude": (lambda t: _pickles(t, _set_signal(8, np.full(9000, 29000.0) * np.sign(np.sin(np.arange(9000))))), ["record train_df:8 reaches 29000 ADC units (29 mV)", "data.max_abs_amplitude"]),
    "two leads in Parquet": (_parquet_with_two_leads, ["has a 2-D signal of shape (2, 9000)", "Keep one lead"]),
    "Parquet signal of text": (_parquet_with_text_signal, ["text.parquet: the `signal` column holds text (str '", "not arrays of numbers", "ecg-ray data convert"]),
    "one signal of text": (lambda t: _pickles(t, _set_signal(7, "1.0,2.0," * 5000)), ["record train_df:7 has a signal that is not numbers (str '1.0,2.0,", "arrays of numbers"]),
    "pickle without --trust-pickle": (lambda t: _pickles(t)[:3], ["The data files", "train_df.pkl and", "val_df.pkl are pickles", "--trust-pickle", "ecg-ray data convert"]),
    "parquet lacks record ids": (lambda t: frame(_base(20)).to_parquet(t / "x.parquet") or [str(t / "x.parquet")], ["x.parquet lacks the `record` column"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_file_record_and_fix(case, tmp_path, capsys, monkeypatch):
    make, expected = BAD_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    cache, storage = tmp_path / "cache", tmp_path / "results"
    monkeypatch.setenv("ECG_RAY_CACHE", str(cache))
    args = make(inputs)
    rc = main(["tune", "experiments/quick.yaml", "--storage", str(storage), "--data", *args])
    err = capsys.readouterr().err
    assert rc == 2
    for fragment in expected:
        assert fragment in err
    assert err.count("\n") == 1  # one paragraph
    assert len(err) < 2000  # names the problem; never dumps a signal
    assert not (storage / "quick").exists()  # no experiment folder
    assert not cache.exists() or not any(cache.iterdir())  # no cache entry


def test_skip_drops_bad_records_and_lists_each(tmp_path):
    def edit(folder, rs):
        _truncate("A00005.mat")(folder, rs)
        _rewrite("A00007.hea", " 300 ", " 500 ")(folder, rs)

    folder = _challenge(tmp_path, edit)[0]
    data = prepare(_cfg("cinc2017", folder, cache=tmp_path / "c", on_bad_record="skip"))
    assert sorted(s["record"] for s in data.meta.skipped) == ["A00005", "A00007"]
    assert sum(len(v) for v in data.ids.values()) == 118
    with pytest.raises(DataError, match="2 bad record"):
        prepare(_cfg("cinc2017", folder, cache=tmp_path / "c"))


def test_data_check_lists_every_problem(tmp_path, capsys):
    folder = _challenge(tmp_path, _truncate("A00005.mat"))[0]
    assert main(["data", "check", folder]) == 1
    out = capsys.readouterr().out
    assert "Problems: 1" in out and "A00005" in out and "on_bad_record: skip" in out


def test_data_check_warns_about_pickles(seed_pickles, capsys):
    assert main(["data", "check", str(seed_pickles / "train_df.pkl"), "--trust-pickle", str(seed_pickles / "train_df.pkl")]) == 0
    assert "runs code stored in the file" in capsys.readouterr().out


def test_split_ids_and_hash_are_recorded(tmp_path):
    cfg = _cfg("synthetic", n_records=80, cache=tmp_path)
    a, b = prepare(cfg, use_cache=False), prepare(cfg, use_cache=False)
    assert a.ids == b.ids and a.data_hash == b.data_hash
    assert prepare(_cfg("synthetic", n_records=80, val_fraction=0.25), use_cache=False).data_hash != a.data_hash
    json.dumps(a.ids)  # serialisable as written to data_splits.json
