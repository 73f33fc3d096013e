"""`ecg-ray tune FILE --extend DIR`: a finished experiment takes more seeds, configs and draws from an
edited file; its finished trials are kept, and what would make them incomparable is refused by name."""

from dataclasses import replace

import pandas as pd
import pytest
import yaml

from ecg_ray import storage
from ecg_ray.commands.main import main
from ecg_ray.config import experiment_from_dict
from ecg_ray.config.extension import check_settings, keyed_trials
from ecg_ray.errors import ConfigError
from helpers import read_json, read_table

BASE = {"search": {"lr": [0.001], "epochs": 1}, "data": {"n_records": 120, "test_fraction": 0.2}}


def _cfg(**edits):
    raw = {"search": dict(BASE["search"]), "data": dict(BASE["data"]), "scheduler": {"name": "none"}}
    for key, value in edits.items():
        section, _, name = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[name] = value
    return experiment_from_dict(raw)


@pytest.mark.parametrize("edit, named", [
    ({"data.val_fraction": 0.3}, "data.val_fraction: 0.2 in the folder, 0.3 in the file"),
    ({"data.n_records": 200}, "data.n_records: 120 in the folder, 200 in the file"),
    ({"seed": 7}, "seed: 42 in the folder, 7 in the file"),
    ({"data.folds": 3}, "data.folds: 0 in the folder, 3 in the file"),
    ({"scheduler.name": "asha"}, "scheduler.name: 'none' in the folder, 'asha' in the file"),
], ids=["split", "data", "split seed", "folds", "scheduler"])
def test_an_edit_of_the_data_split_folds_or_scheduler_is_refused_naming_the_key(edit, named):
    with pytest.raises(ConfigError, match="Cannot extend DIR: ") as err:
        check_settings(_cfg(), _cfg(**edit), "DIR")
    assert named in str(err.value) and "another --name" in str(err.value)


def test_old_trials_keep_their_keys_and_new_ones_follow_in_the_files_order():
    old = _cfg().trials()
    new = _cfg(**{"search.lr": [0.0005, 0.001], "repeats": 2})
    check_settings(_cfg(), new, "DIR")
    keyed = keyed_trials(old, new.grid(), "DIR")
    assert keyed["t0000"] == old["t0000"] and len(keyed) == 4
    assert list(keyed) == ["t0001", "t0002", "t0000", "t0003"]  # the file's order: lr 0.0005 first, seeds 42, 43
    assert [(t.lr, t.seed) for t in keyed.values()] == [(0.0005, 42), (0.0005, 43), (0.001, 42), (0.001, 43)]


@pytest.mark.parametrize("edit, named", [
    ({"search.epochs": 4}, "search.epochs: 1 in the folder, 4 in the file"),
    ({"search.lr": [0.0005]}, "search.lr: 0.001 in the folder, 0.0005 in the file"),
], ids=["epochs of an existing config", "a config dropped"])
def test_a_trial_the_folder_holds_must_stay_among_the_files_naming_what_changed(edit, named):
    with pytest.raises(ConfigError, match="its trial t0000 .* is not among the file's trials") as err:
        keyed_trials(_cfg().trials(), _cfg(**edit).grid(), "DIR")
    assert named in str(err.value)


def test_an_optuna_study_is_extended_by_its_budget_only():
    space = {"algorithm": "optuna", "num_samples": 4, "lr": {"loguniform": [1e-4, 1e-2]}, "epochs": 2}
    study = experiment_from_dict({"search": space})
    check_settings(study, experiment_from_dict({"search": space | {"num_samples": 8}}), "DIR")
    with pytest.raises(ConfigError, match=r"search.lr: .* An Optuna study is extended by its budget only"):
        check_settings(study, experiment_from_dict({"search": space | {"num_samples": 8, "lr": {"loguniform": [1e-5, 1e-2]}}}), "DIR")
    with pytest.raises(ConfigError, match="An extension only adds trials"):
        check_settings(study, experiment_from_dict({"search": space | {"num_samples": 2}}), "DIR")


def test_extend_is_refused_with_resume_overwrite_or_without_a_folder(tmp_path, capsys):
    from helpers import tiny_experiment

    exp_file = tiny_experiment(tmp_path, "small", tmp_path)
    for args, said in ((["--extend", str(tmp_path / "small"), "--overwrite"], "--overwrite cannot be given with it"),
                       (["--extend", str(tmp_path / "small")], "Nothing to extend"),
                       (["--extend", str(tmp_path / "small"), "--name", "x"], "--name cannot be given with it")):
        assert main(["tune", str(exp_file), *args]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1
    assert main(["tune", "--extend", str(tmp_path / "small")]) == 2
    assert "takes the edited experiment file" in capsys.readouterr().err
    assert not (tmp_path / "small").exists()


def _write(folder, name, storage_path, **edits):
    from helpers import tiny_experiment

    path = tiny_experiment(folder, name, storage_path, search=BASE["search"], data=BASE["data"] | {"cache_dir": str(folder / "cache")})
    raw = yaml.safe_load(path.read_text())
    for key, value in edits.items():
        section, _, leaf = key.rpartition(".")
        (raw[section] if section else raw)[leaf] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def _metrics(folder):
    """What a paper reads: each (config, seed)'s best epoch and metrics, each config's rank and mean, the test table."""
    keys = ["lr", "seed"]
    report = storage.join(str(folder), "report")
    trials = read_table(storage.join(report, "trials.csv"))[keys + ["best_epoch", "best_val_macro_f1", "val_loss", "val_challenge_f1"]]
    configs = read_table(storage.join(report, "configs.csv"))
    configs = configs[["rank", "lr", "n_seeds", "best_val_macro_f1_mean", "val_challenge_f1_mean"]]
    test = read_table(storage.join(report, "test.csv"))[["model", "lr", "seed", "test_macro_f1", "test_macro_f1_ci_low"]]
    return (trials.sort_values(keys).reset_index(drop=True), configs.sort_values("lr").reset_index(drop=True),
            test.sort_values(["model", "lr", "seed"]).reset_index(drop=True))


def _result_files(exp: str) -> list[str]:
    return [storage.join(exp, rel) for rel in storage.files(exp) if rel.count("/") == 1 and rel.endswith("/result.json")]


@pytest.mark.ray
def test_extend_runs_only_the_new_trials_and_its_tables_equal_a_fresh_run_of_the_edited_file(ray_local, storage_root, tmp_path, capsys):
    """In the bucket where the S3 server runs (a cluster's results), the fresh run in a local folder."""
    original = _write(tmp_path, "study", storage_root)
    assert main(["tune", str(original)]) == 0
    exp = storage.join(storage_root, "study")
    (first,) = _result_files(exp)
    before = storage.read_bytes(first)
    # A new config placed before the old one in the file: the kept trial keeps t0000, the new one is t0001.
    edited = _write(tmp_path, "edited", tmp_path / "fresh", **{"search.lr": [0.0005, 0.001]})
    capsys.readouterr()

    assert main(["tune", str(edited), "--extend", exp]) == 0
    out = capsys.readouterr().out
    assert f"extending {exp}: 1 finished trial(s) kept, 1 to run" in out
    runs = read_json(storage.join(exp, "runs.json"))
    assert [(r["trials"], r["extend"]) for r in runs[-1:]] == [(1, True)] and len(runs) == 2
    assert len(_result_files(exp)) == 2 and storage.read_bytes(first) == before  # the kept trial was not run again
    record = read_json(storage.join(exp, "ecg_ray_experiment.json"))
    assert record["trial_keys"] == ["t0001", "t0000"] and len(record["extended"]) == 1  # in the file's order
    assert [g["lr"] for g in record["grid"]] == [0.0005, 0.001] and record["config"]["name"] == "study"

    assert main(["tune", str(edited)]) == 0  # the edited file, fresh, in its own folder
    for extended, fresh in zip(_metrics(exp), _metrics(tmp_path / "fresh" / "edited")):
        pd.testing.assert_frame_equal(extended, fresh)

    assert main(["tune", "--resume", exp]) == 0  # the extended folder resumes as itself: nothing left to run
    assert "every trial of" in capsys.readouterr().out
    assert main(["tune", str(edited), "--extend", exp]) == 0
    assert "nothing to run: the file adds no trial to it" in capsys.readouterr().out

    changed = _write(tmp_path, "changed", tmp_path, **{"search.lr": [0.001, 0.0005], "data.val_fraction": 0.3})
    assert main(["tune", str(changed), "--extend", exp]) == 2
    err = capsys.readouterr().err
    assert "data.val_fraction: 0.2 in the folder, 0.3 in the file" in err and err.count("\n") == 1
    assert read_json(storage.join(exp, "ecg_ray_experiment.json")) == record  # a refused extension writes nothing

    other_data = _write(tmp_path, "other", tmp_path, **{"search.lr": [0.001, 0.0005], "data.difficulty": "realistic"})
    assert main(["tune", str(other_data), "--extend", exp]) == 2
    assert "data.difficulty: 'easy' in the folder, 'realistic' in the file" in capsys.readouterr().err


def test_a_changed_split_is_refused_once_the_data_is_read(tmp_path, capsys):
    """The same settings that now split into other records (the data files changed): refused before any trial."""
    from helpers import write_challenge

    from ecg_ray.data.synthetic import generate
    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.tuning.driver import check_split, prepare_data

    rs = generate(60, seed=1, difficulty="easy")
    rs.ids = [f"A{i:05d}" for i in range(60)]
    cfg = experiment_from_dict({"name": "cinc", "storage_path": str(tmp_path), "data": {"source": "cinc2017",
                                "path": str(write_challenge(tmp_path / "records", rs)), "cache_dir": str(tmp_path / "cache")}})
    exp = ExperimentDir.for_config(cfg)
    data = prepare_data(cfg, exp, False, False)
    moved = {k: list(reversed(v)) if k == "val" else v for k, v in data.ids.items()}
    exp.write_record({"config": cfg.to_dict(), "data_hash": data.data_hash}, {"data_hash": data.data_hash, "ids": moved})
    with pytest.raises(ConfigError, match=r"the data now splits into other records \(val differ"):
        check_split(exp, data)
    check_split(exp, replace(data, ids=moved))


def test_a_folder_of_an_earlier_ecg_ray_without_trial_keys_is_refused(tmp_path, capsys):
    from helpers import fake_experiment, tiny_experiment

    fake_experiment(tmp_path / "old", [("t0000", {"lr": 0.001}, [0.2, 0.3])])
    exp_file = tiny_experiment(tmp_path, "edited", tmp_path)
    assert main(["tune", str(exp_file), "--extend", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err
    assert "written by an earlier ecg_ray (its trials have no recorded keys)" in err and err.count("\n") == 1
