"""Nothing half-written, and storage problems reported before the first trial."""

import pytest

from ecg_ray.commands.main import main
from ecg_ray.errors import ConfigError
from ecg_ray.results.store.folder import check_writable, read_json, write_json
from ecg_ray.storage import atomic_path, atomic_write_text


def test_a_crash_mid_write_keeps_the_old_file(tmp_path):
    dest = tmp_path / "trials.csv"
    atomic_write_text(dest, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("killed mid-export")
    assert dest.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]  # no temporary file left
    atomic_write_text(dest, "new\n")
    assert dest.read_text() == "new\n"


def test_unwritable_storage_is_refused_with_the_fix(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"storage path .*a_file/results is not writable.*Pass --storage DIR"):
        check_writable(str(blocker / "results"))


def test_full_disk_is_refused_before_any_trial(tmp_path):
    with pytest.raises(ConfigError, match=r"MiB free; an experiment needs at least"):
        check_writable(str(tmp_path), min_free_bytes=2**62)


def test_tune_refuses_bad_storage_before_preparing_data(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["tune", "experiments/quick.yaml", "--storage", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and "--storage" in err


def test_json_round_trip_local_and_uri(tmp_path):
    write_json(str(tmp_path / "a" / "x.json"), {"k": [1, 2]})
    assert read_json(str(tmp_path / "a" / "x.json")) == {"k": [1, 2]}
    write_json(f"file://{tmp_path}/b/y.json", {"k": 3})
    assert read_json(f"file://{tmp_path}/b/y.json") == {"k": 3}
    assert read_json(str(tmp_path / "missing.json")) is None
    assert read_json(f"file://{tmp_path}/missing.json") is None
