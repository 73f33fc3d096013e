"""`ecg-ray predict` on every input format, and what it refuses, with a small model made here (no Ray)."""

from dataclasses import asdict

import pytest
import torch

from ecg_ray.commands.main import main
from ecg_ray.config import TrialConfig, load_experiment
from ecg_ray.data.prepare import preparation_settings
from ecg_ray.results.inference.predict import MODEL_FORMAT, predict
from ecg_ray.training.loop import build_trial
from helpers import easy_records, frame, write_challenge, write_pickle


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "best_model.pt"
    trial = TrialConfig(hidden_size=8)
    state = build_trial(trial, [1.0, 1.0, 1.0, 1.0])
    settings = preparation_settings(load_experiment("experiments/quick.yaml"))
    torch.save({"format": MODEL_FORMAT, "model": state.model.state_dict(), "trial": asdict(trial), "data_settings": settings,
                "data_hash": "x", "metrics": {}, "versions": {}}, path)
    return str(path)


def _records(n=5):
    return easy_records(n, seed=4, prefix="C")


def test_every_input_format_gives_one_row_per_record(model, tmp_path):
    rs = _records()
    folder = write_challenge(tmp_path / "labelled", rs)
    parquet = tmp_path / "x.parquet"
    frame(rs).assign(record=rs.ids).drop(columns="label").to_parquet(parquet)
    pickled = write_pickle(tmp_path / "x.pkl", rs)
    tables = {
        "folder with REFERENCE.csv": predict(model, str(folder)),
        "one record": predict(model, str(folder / "C00001.hea")),
        "parquet without labels": predict(model, str(parquet)),
        "pickle": predict(model, str(pickled), trust_pickle=[str(pickled)]),
    }
    assert tables["folder with REFERENCE.csv"]["label"].tolist() == [["N", "A", "O", "~"][l] for l in rs.labels]
    assert tables["one record"]["record"].tolist() == ["C00001"]
    assert "label" not in tables["parquet without labels"] and tables["parquet without labels"]["record"].tolist() == rs.ids
    same = tables["folder with REFERENCE.csv"].set_index("record")["p_N"]
    assert tables["parquet without labels"].set_index("record")["p_N"].loc[rs.ids].round(5).tolist() == same.loc[rs.ids].round(5).tolist()
    assert len(tables["pickle"]) == 5


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: write_pickle(t / "x.pkl", _records()), "reads the pickle"),
        (lambda t: (t / "notes.txt").write_text("hi") and t / "notes.txt", "pass a challenge folder, a .mat/.hea record"),
        (lambda t: (t / "empty").mkdir() or t / "empty", "holds no records"),
    ],
    ids=["pickle without --trust-pickle", "unknown file", "empty folder"],
)
def test_bad_input_is_refused_naming_the_file(model, tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["predict", model, str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_file_that_is_not_a_model_is_refused(tmp_path, capsys):
    bogus = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, bogus)
    assert main(["predict", str(bogus), "synthetic"]) == 2
    assert "is not an ecg_ray best_model.pt" in capsys.readouterr().err


def test_a_model_trained_at_another_length_and_precision_predicts_as_it_was_evaluated(tmp_path):
    from ecg_ray.data.prepare import pad_or_trim
    from ecg_ray.results.inference.predict import class_probabilities, load_model

    trial = TrialConfig(hidden_size=8, target_length=6000, precision="bf16")
    state = build_trial(trial, [1.0, 1.0, 1.0, 1.0])
    path = tmp_path / "best_model.pt"
    torch.save({"format": MODEL_FORMAT, "model": state.model.state_dict(), "trial": asdict(trial),
                "data_settings": preparation_settings(load_experiment("experiments/quick.yaml")),
                "data_hash": "x", "metrics": {}, "versions": {}}, path)
    rs = _records()
    folder = write_challenge(tmp_path / "labelled", rs)
    got = predict(str(path), str(folder)).set_index("record").loc[rs.ids]
    (model,), _ = load_model(str(path))
    expected = class_probabilities(model, pad_or_trim(rs.signals, 6000), trial.batch_size, trial)  # its centre 6000 samples, in bf16
    assert got["p_N"].tolist() == pytest.approx(expected[:, 0].tolist(), abs=1e-6)


def test_an_unknown_label_is_a_bad_record_as_in_tune_not_normal(model, tmp_path, capsys):
    folder = write_challenge(tmp_path / "labelled", _records())
    ref = folder / "REFERENCE.csv"
    ref.write_text(ref.read_text().replace("C00002,", "C00002,Q\nX,", 1).replace("\nX,", "\nC99999,", 1))
    ref.write_text("".join(l + "\n" for l in ref.read_text().splitlines() if not l.startswith("C99999")))
    assert main(["predict", model, str(folder)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "record C00002 has unknown label 'Q'" in line and "allowed: N, A, O, ~" in line
    assert main(["data", "check", str(folder)]) == 1  # the same folder, the same rule
    capsys.readouterr()
    table = predict(model, str(folder), on_bad_record="skip")
    assert "C00002" not in table["record"].tolist() and len(table) == 4
    assert [s["record"] for s in table.attrs["skipped"]] == ["C00002"]


def test_markdown_output_escapes_record_ids(model, tmp_path, capsys):
    rs = _records(2)
    rs.ids = ["<img src=x onerror=alert(1)>", "a|b`c`*d*[e](f)"]
    parquet = tmp_path / "x.parquet"
    frame(rs).assign(record=rs.ids).drop(columns="label").to_parquet(parquet)
    assert main(["predict", model, str(parquet), "--out", str(tmp_path / "p.md")]) == 0
    assert main(["predict", model, str(parquet)]) == 0
    for text in ((tmp_path / "p.md").read_text(), capsys.readouterr().out):
        assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
        assert r"a\|b\`c\`\*d\*\[e\](f)" in text
        rows = [line for line in text.splitlines() if line.startswith("| ")]
        assert len(rows) == 3 and len({line.count(" | ") for line in rows}) == 1  # no id opened a column


def test_weights_that_do_not_fit_the_recorded_config_are_refused_in_one_line(model, tmp_path, capsys):
    saved = torch.load(model, weights_only=True)
    for name, edit in {"wider": lambda s: s["trial"].update(hidden_size=16),
                       "partial": lambda s: s["model"].pop(next(iter(s["model"])))}.items():
        bad = {**saved, "trial": dict(saved["trial"]), "model": dict(saved["model"])}
        edit(bad)
        torch.save(bad, tmp_path / f"{name}.pt")
        assert main(["predict", str(tmp_path / f"{name}.pt"), "synthetic"]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert f"{name}.pt: its weights do not fit the model its recorded trial config describes" in line


def _ensemble_file(path, n=3):
    """An ensemble best_model.pt of `n` small models (seeds 0..n-1) and the members' own files."""
    from ecg_ray.results.inference.predict import ENSEMBLE_FORMAT

    settings = preparation_settings(load_experiment("experiments/quick.yaml"))
    members, singles = [], []
    for seed in range(n):
        trial = TrialConfig(hidden_size=8, seed=seed)
        state = build_trial(trial, [1.0, 1.0, 1.0, 1.0])
        member = {"model": state.model.state_dict(), "trial": asdict(trial), "trial_id": f"t{seed:04d}", "epoch": 1,
                  "metrics": {}}
        members.append(member)
        singles.append(path.parent / f"member{seed}.pt")
        torch.save({"format": MODEL_FORMAT, **member, "data_settings": settings, "data_hash": "x", "versions": {}}, singles[-1])
    torch.save({"format": ENSEMBLE_FORMAT, "members": members, "trial": members[0]["trial"], "trial_id": "t0000",
                "data_settings": settings, "data_hash": "x", "versions": {}}, path)
    return path, singles


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities_with_their_agreement(tmp_path):
    """best_model.pt of a config with several trials: its probabilities are the mean of its members' own
    (each member's file predicted alone), `agreement` is the share of members predicting the ensemble's class."""
    import numpy as np

    path, singles = _ensemble_file(tmp_path / "best_model.pt")
    folder = write_challenge(tmp_path / "labelled", _records(6))
    got = predict(str(path), str(folder)).set_index("record")
    alone = [predict(str(s), str(folder)).set_index("record").loc[got.index] for s in singles]
    cols = ["p_N", "p_A", "p_O", "p_noisy"]
    assert np.allclose(got[cols].to_numpy(), np.mean([a[cols].to_numpy() for a in alone], axis=0), atol=1e-7)
    votes = np.array([a["predicted"].to_numpy() for a in alone])
    assert got["agreement"].tolist() == pytest.approx((votes == got["predicted"].to_numpy()).mean(axis=0).tolist())
    assert "agreement" not in alone[0]  # a single model's table is as before


def test_an_ensemble_with_a_damaged_member_is_refused(tmp_path, capsys):
    path, _ = _ensemble_file(tmp_path / "best_model.pt", n=2)
    saved = torch.load(path, weights_only=True)
    saved["members"][1]["model"] = {"gru.weight_ih_l0": torch.zeros(2)}
    torch.save(saved, path)
    assert main(["predict", str(path), "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "its weights do not fit the model" in err and err.count("\n") == 1


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("data_settings"), "lacks 'data_settings', which every ecg_ray model file holds"),
    (lambda s: s["data_settings"].pop("min_length"), "lacks 'data_settings.min_length'"),
    (lambda s: s.pop("trial"), "lacks 'trial'"),
    (lambda s: s["trial"].update(no_such_knob=3), "the trial config it records is not one this ecg_ray knows"),
], ids=["no data settings", "no min_length", "no trial", "an unknown trial key"])
def test_a_model_file_missing_a_key_or_with_an_unknown_one_says_which(model, tmp_path, capsys, edit, message):
    """Not a raw KeyError, and an unknown trial key is not blamed on the weights."""
    saved = torch.load(model, weights_only=True)
    bad = {**saved, "trial": dict(saved["trial"]), "data_settings": dict(saved["data_settings"])}
    edit(bad)
    torch.save(bad, tmp_path / "edited.pt")
    assert main(["predict", str(tmp_path / "edited.pt"), "synthetic"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line and "weights do not fit" not in line and "Traceback" not in line


def test_predicts_bad_record_advice_names_its_own_option(model, tmp_path, capsys):
    """A record shorter than the model's min_length: the advice is predict's --on-bad-record, not a data: key."""
    rs = _records(3)
    rs.signals[1] = rs.signals[1][:500]
    folder = write_challenge(tmp_path / "short", rs)
    assert main(["predict", model, str(folder)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "the model's min_length" in line and "pass --on-bad-record skip" in line
    assert "data.min_length" not in line and "under `data:`" not in line
