"""Careless or hostile input that is now refused, or handled the way the user meant it."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ecg_ray.commands.main import main
from ecg_ray.config import load_experiment
from ecg_ray.data.prepare import prepare
from ecg_ray.errors import DataError
from ecg_ray.storage import atomic_write_text
from helpers import Payload, easy_records, write_challenge, write_pickle

ROOT = Path(__file__).resolve().parents[1]


def _records(n=60):
    return easy_records(n, seed=5, prefix="A")


def _challenge_cfg(folder, cache):
    return load_experiment("experiments/quick.yaml", **{"data.source": "cinc2017", "data.path": str(folder), "data.cache_dir": str(cache)})


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda text: "data_source,class\n" + text, id="header row"),
        pytest.param(lambda text: "record,label\n" + text, id="header row record,label"),
        pytest.param(lambda text: "\ufeff" + text, id="byte-order mark"),
        pytest.param(lambda text: "\ufeffdata_source,class\r\n" + text.replace("\n", "\r\n"), id="Excel: BOM, header, CRLF"),
    ],
)
def test_reference_csv_as_public_copies_and_excel_write_it(tmp_path, edit):
    folder = write_challenge(tmp_path / "training2017", _records())
    plain = prepare(_challenge_cfg(folder, tmp_path / "c0"))
    ref = folder / "REFERENCE.csv"
    ref.write_text(edit(ref.read_text()), encoding="utf-8")
    data = prepare(_challenge_cfg(folder, tmp_path / "c1"))
    assert data.data_hash == plain.data_hash and sum(map(len, data.ids.values())) == 60


def test_a_first_row_naming_a_real_record_is_data_not_a_header(tmp_path):
    folder = write_challenge(tmp_path / "training2017", _records())
    ref = folder / "REFERENCE.csv"
    lines = ref.read_text().splitlines()
    assert lines[0].startswith("A00000,")
    ref.write_text("\n".join(["A00000,Q", *lines[1:]]) + "\n")  # a typo in the first row's label
    with pytest.raises(DataError, match="record A00000 has unknown label 'Q'"):
        prepare(_challenge_cfg(folder, tmp_path / "c"))


def test_data_check_flags_flat_and_implausible_records(tmp_path, capsys):
    rs = _records(80)
    rs.signals[3] = np.zeros(9000)
    rs.signals[5] = rs.signals[5] * 40  # tens of mV
    path = write_pickle(tmp_path / "x.pkl", rs)
    assert main(["data", "check", str(path), "--trust-pickle", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Problems: 2" in out and "record x:3 is flat" in out and "record x:5 reaches" in out


def test_numeric_strings_are_floats_for_float_keys(tmp_path):
    """PyYAML reads `1e-3` as a string (YAML 1.1 wants a dot); for a float key it is the number meant."""
    path = tmp_path / "e.yaml"
    path.write_text("search:\n  lr: [1e-3, 5e-4]\n  dropout: 3e-1\ndata:\n  val_fraction: 2.5e-1\n")
    assert yaml.safe_load(path.read_text())["search"]["lr"] == ["1e-3", "5e-4"]
    cfg = load_experiment(path)
    assert [t.lr for t in cfg.grid()] == [0.001, 0.0005] and cfg.grid()[0].dropout == 0.3
    assert cfg.data.val_fraction == 0.25 and cfg.search["lr"] == [0.001, 0.0005]  # recorded as numbers


CONFIG_CASES = {
    "empty file": ("", ["empty.yaml is empty", "experiments/quick.yaml"]),
    "comments only": ("# nothing yet\n", ["empty.yaml is empty"]),
    "repeated grid value": ("search:\n  lr: [0.001, 1e-3]\n", ["'search.lr' parameter must be a list without repeated values", "[0.001, 0.001]"]),
    "repeated choice": ("search:\n  optimizer: [adam, sgd, adam]\n", ["'search.optimizer'", "repeated values"]),
    "text for an int": ("search:\n  hidden_size: '128'\n", ["The 'hidden_size' parameter must be an int", "Got '128'"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_experiment_files_are_refused_naming_file_and_key(case, tmp_path, capsys):
    text, expected = CONFIG_CASES[case]
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    storage = tmp_path / "results"
    assert main(["tune", str(path), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err
    for fragment in expected:
        assert fragment in err
    assert not storage.exists() or not any(storage.iterdir())


def test_files_are_created_with_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "report.md", "x\n")
        assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o640
        os.umask(0o002)
        atomic_write_text(tmp_path / "shared.md", "x\n")
        assert stat.S_IMODE((tmp_path / "shared.md").stat().st_mode) == 0o664
    finally:
        os.umask(old)


@pytest.mark.tuning
def test_ctrl_c_while_preparing_data_says_nothing_was_written(tmp_path):
    exp = tmp_path / "big.yaml"
    raw = yaml.safe_load((ROOT / "experiments" / "quick.yaml").read_text())
    raw["data"]["n_records"] = 8528  # a few seconds of generating: time to interrupt it
    raw["storage_path"] = str(tmp_path / "results")
    exp.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "ECG_RAY_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    # As from a terminal: Ctrl-C's default disposition. A process started with SIGINT ignored (a background job
    # of a script, or a test process where something set SIG_IGN) passes the ignore on through exec, and Python
    # then installs no KeyboardInterrupt handler: the run would rightly carry on (seen once in a full suite).
    proc = subprocess.Popen([sys.executable, "-m", "ecg_ray.commands.main", "tune", str(exp)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "[ecg-ray] experiment quick" in proc.stdout.readline()
    # A state, not a time: the line printed as preparation starts (every import done; 8528 records to generate).
    assert proc.stdout.readline().startswith("[ecg-ray] preparing the data (synthetic)")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "Stopped before any trial started; nothing was written" in err and "--resume" not in err
    assert not (tmp_path / "results" / "quick" / "ecg_ray_experiment.json").exists()


def test_one_pickle_file_needs_the_flag_too_and_the_warning_is_printed_with_it(tmp_path, capsys):
    path = write_pickle(tmp_path / "x.pkl", _records(80))
    assert main(["data", "check", str(path)]) == 2
    assert f"The data file {path} is a pickle: loading a pickle runs code stored in it" in capsys.readouterr().err
    assert main(["data", "convert", str(path), str(tmp_path / "x.parquet"), "--trust-pickle", str(path)]) == 0
    assert "[ecg-ray] warning: Loading a pickle runs code" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "x.parquet")]) == 0  # the converted file needs no trust


# --- experiment files: duplicate keys, alias bombs, provenance, combined arguments (issue 24) ------


def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines(tmp_path):
    from ecg_ray.errors import ConfigError

    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\nsearch:\n  lr: [0.001]\n  epochs: 2\n  lr: [0.01]\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: the key 'lr' is given twice in one mapping \(lines 3 and 5\)"):
        load_experiment(path)
    path.write_text("search:\n  lr: 0.001\nsearch:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"the key 'search' is given twice in one mapping \(lines 1 and 3\)"):
        load_experiment(path)


def test_an_alias_bomb_is_refused_in_a_moment_before_it_expands(tmp_path):
    from ecg_ray.errors import ConfigError

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10**9 values
    path = tmp_path / "bomb.yaml"
    path.write_text("origin:\n" + "".join(f"  {line}\n" for line in lines) + "search:\n  lr: 0.001\n")
    assert path.stat().st_size < 1000
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"bomb.yaml: its aliases expand to more than 100,000 values"):
        load_experiment(path)
    assert time.monotonic() - start < 10


def test_origin_is_validated_like_every_other_key(tmp_path):
    from ecg_ray.config import experiment_from_dict
    from ecg_ray.errors import ConfigError

    assert experiment_from_dict({"origin": {"experiment": "/r/x", "top": 4, "trial_ids": ["t0000", "t0003"]}}).origin
    for bad in ({"deep": {"nested": [1]}}, {f"k{i}": 1 for i in range(17)}, {"text": "x" * 5000}, ["not", "a", "mapping"]):
        with pytest.raises(ConfigError, match="The 'origin' parameter must be a mapping of at most 16 names"):
            experiment_from_dict({"origin": bad})


@pytest.mark.parametrize("text", ["- a list\n- not a mapping\n", "data: 3\nsearch:\n  lr: 0.001\n"])
def test_an_override_on_a_file_that_is_not_a_mapping_is_a_clear_error(tmp_path, text, capsys):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    assert main(["tune", str(path), "--data", "synthetic", "--storage", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ecg-ray: error: ") and "must be a" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_tune_with_a_file_and_resume_is_refused_naming_both(tmp_path, capsys):
    assert main(["tune", "experiments/quick.yaml", "--resume", str(tmp_path / "quick")]) == 2
    err = capsys.readouterr().err
    assert "Pass an experiment file (experiments/quick.yaml) or --resume" in err and "not both" in err


# --- row 3: --trust-pickle names the file, checked against the recorded path and hash --------




def _pickle_folder(tmp_path):
    """An experiment folder whose experiment read `mine.pkl`, as `ecg-ray tune` records one (no trial ran)."""
    from ecg_ray.config import experiment_from_dict
    from ecg_ray.data import trust
    from ecg_ray.results.store.folder import ExperimentDir

    mine = str(write_pickle(tmp_path / "mine.pkl", _records(80)))
    cfg = experiment_from_dict({"name": "p", "storage_path": str(tmp_path / "results"), "search": {"lr": [1e-3]},
                                "data": {"source": "pickle", "path": mine, "trust_pickle": True}})
    exp = ExperimentDir.for_config(cfg)
    exp.write_record({"config": cfg.to_dict(), "data_hash": "h", "pickles": trust.record(trust.pickle_paths(cfg.data))},
                     {"data_hash": "h", "ids": {}})
    return exp, mine


def _edit_record(exp, **data):
    import json

    path = Path(exp.experiment_file)
    record = json.loads(path.read_text())
    record["config"]["data"].update(data)
    path.write_text(json.dumps(record))


def _one_line_refusal(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_trust_names_the_file_and_a_folder_that_names_another_pickle_is_refused_before_loading_it(tmp_path, capsys):
    exp, mine = _pickle_folder(tmp_path)
    assert exp.read_config(trust_pickle=[mine]).data.path == mine  # the user's file, as recorded: trusted
    marker = tmp_path / "payload-ran"
    (tmp_path / "evil.pkl").write_bytes(__import__("pickle").dumps(Payload(marker)))
    _edit_record(exp, path=str(tmp_path / "evil.pkl"))
    for argv in (["tune", "--resume", exp.path, "--trust-pickle", mine], ["rerun", exp.path, "t0000", "--trust-pickle", mine],
                 ["repeat", exp.path, "--top", "1", "--seeds", "2", "--trust-pickle", mine]):
        assert main(argv) == 2
        _one_line_refusal(capsys, f"names the pickle {tmp_path / 'evil.pkl'}, which its experiment did not start with "
                          f"(it recorded {mine})", "the folder was edited")
    # Naming the planted file itself changes nothing: it is not the file the experiment started with.
    assert main(["tune", "--resume", exp.path, "--trust-pickle", str(tmp_path / "evil.pkl")]) == 2
    _one_line_refusal(capsys, "which its experiment did not start with", "the folder was edited")
    _edit_record(exp, path=mine)  # put back: only the user's word is missing now
    assert main(["tune", "--resume", exp.path]) == 2
    _one_line_refusal(capsys, f"reads the pickle {mine}, which no --trust-pickle names", f"pass --trust-pickle {mine}")
    assert not marker.exists()  # the planted pickle never ran


def test_a_trusted_pickle_whose_content_changed_since_the_experiment_started_is_refused(tmp_path, capsys):
    exp, mine = _pickle_folder(tmp_path)
    write_pickle(Path(mine), _records(90))  # same path, other content
    assert main(["tune", "--resume", exp.path, "--trust-pickle", mine]) == 2
    _one_line_refusal(capsys, f"The pickle {mine} changed since", "SHA-256", "not the file that was trusted")


def test_trust_on_the_command_line_must_name_exactly_the_pickles_read(tmp_path, capsys):
    mine = str(write_pickle(tmp_path / "mine.pkl", _records(80)))
    other = str(write_pickle(tmp_path / "other.pkl", _records(80)))
    storage = tmp_path / "results"
    assert main(["tune", "experiments/quick.yaml", "--storage", str(storage), "--data", mine, "--trust-pickle", other]) == 2
    _one_line_refusal(capsys, f"reads the pickle {mine}, which no --trust-pickle names")
    assert main(["tune", "experiments/quick.yaml", "--storage", str(storage), "--trust-pickle", mine]) == 2
    _one_line_refusal(capsys, "does not read that file (it reads no pickle)")
    assert main(["data", "check", mine, "--trust-pickle", other]) == 2
    _one_line_refusal(capsys, f"reads the pickle {mine}, which no --trust-pickle names")
    assert main(["data", "check", mine, "--trust-pickle", mine, "--trust-pickle", other]) == 2
    _one_line_refusal(capsys, f"--trust-pickle {other}: This command does not read that file (it reads {mine})")
    assert not storage.exists()


# --- row 8: records far past the challenge's lengths, and the prepared data's memory ------------


def _long_record_parquet(tmp_path, n_long=1_000_000):
    from helpers import frame

    rs = _records(80)
    rs.signals[7] = np.tile(rs.signals[7], n_long // len(rs.signals[7]) + 1)[:n_long]
    path = tmp_path / "long.parquet"
    frame(rs).assign(record=rs.ids).to_parquet(path)
    return path


def test_a_record_far_past_the_challenges_lengths_is_a_bad_record_naming_the_cap(tmp_path, capsys):
    path = _long_record_parquet(tmp_path)
    storage = tmp_path / "results"
    argv = ["tune", "experiments/quick.yaml", "--storage", str(storage), "--data", str(path)]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "record A00007 has 1000000 samples (3333 s at 300 Hz), more than data.max_length=60000" in line
    assert "raise data.max_length if the record is real" in line and not storage.exists()
    assert main(["data", "check", str(path), "--max-length", "2000000"]) == 0  # raised: it is read


def test_the_prepared_datas_memory_is_estimated_before_it_is_allocated(tmp_path, monkeypatch):
    from ecg_ray.data import prepare as prep

    path = _long_record_parquet(tmp_path, 200_000)
    cfg = load_experiment("experiments/quick.yaml", **{"data.source": "parquet", "data.path": str(path), "data.max_length": 300_000,
                                                       "search.train_crop": ["random"], "data.cache_dir": str(tmp_path / "c")})
    monkeypatch.setattr(prep, "MEMORY_SHARE", 1e-6)  # as if this machine had a millionth of its free memory
    with pytest.raises(DataError, match=r"would take 0\.\d\d GiB \(80 records x 9000 samples \+ 80 whole records x the longest, "
                                        r"200000 samples .*Lower data.max_length \(now 300000\)"):
        prepare(cfg, use_cache=False)
    monkeypatch.undo()
    assert prepare(cfg, use_cache=False).whole["train"].shape[1] == 200_000


# --- a full disk is named as one -----------------------------------------------------------------


def _full_disk_error() -> OSError:
    """A real ENOSPC: what the kernel answers a write to /dev/full."""
    try:
        with open("/dev/full", "wb", buffering=0) as full:
            full.write(b"checkpoint")
    except OSError as err:
        return err
    pytest.skip("/dev/full accepted a write")


def test_a_full_disk_is_recognised_through_any_wrapping():
    from ecg_ray.tuning.driver import no_space

    err = _full_disk_error()
    try:
        try:
            raise err
        except OSError as inner:
            raise RuntimeError("Tune failed") from inner
    except RuntimeError as wrapped:
        assert no_space(wrapped)
    assert no_space(RuntimeError(f"RayTaskError(OSError): worker traceback ... {err}"))  # only the text crosses processes
    assert not no_space(RuntimeError("CUDA out of memory")) and not no_space(OSError(13, "Permission denied"))


def test_a_full_disk_during_the_run_ends_in_one_line(tmp_path):
    from ecg_ray.errors import EcgRayError
    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.tuning.driver import _no_space_is_said

    exp = ExperimentDir.parse(tmp_path / "e")
    with pytest.raises(EcgRayError, match=rf"ran out of space .*`ecg-ray tune --resume {exp.path}`"):
        with _no_space_is_said(exp):
            raise RuntimeError("TuneError") from _full_disk_error()
    with pytest.raises(KeyError):  # anything else is not dressed up as a full disk
        with _no_space_is_said(exp):
            raise KeyError("x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the refusal cannot be seen as root")
def test_a_read_only_experiment_folder_is_refused_on_resume_before_ray_starts(tmp_path, capsys):
    from ecg_ray.config import experiment_from_dict
    from ecg_ray.results.store.folder import ExperimentDir

    cfg = experiment_from_dict({"name": "ro", "storage_path": str(tmp_path / "results")})
    exp = ExperimentDir.for_config(cfg)
    exp.write_record({"config": cfg.to_dict(), "data_hash": "h"}, {"data_hash": "h", "ids": {}})
    os.chmod(exp.path, 0o555)
    try:
        t0 = time.monotonic()
        assert main(["tune", "--resume", exp.path]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert f"{exp.path} is not writable, and a resume writes there" in line and time.monotonic() - t0 < 60
    finally:
        os.chmod(exp.path, 0o755)
