"""Models by name (ecg_ray.models): the registry, `build_model`, model_args, and the shipped plug-in
(plugins/ecg-ray-cnn1d, installed by the README's install command) end to end on Ray."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_ray.config import SearchSpace, TrialConfig
from ecg_ray.errors import ConfigError
from ecg_ray.models import build_model, get_model, label, list_models, memory, needed_plugins

PLUGIN = "ecg-ray-cnn1d"


@pytest.fixture(scope="module")
def cnn1d():
    """The repository's plug-in, registered through its entry point (never imported here by path)."""
    assert "cnn1d" in list_models(), ("the plug-in plugins/ecg-ray-cnn1d is not installed: run the README's install "
                                      "command (pip install ... -e plugins/ecg-ray-cnn1d)")
    return get_model("cnn1d")


def test_crnn_is_the_default_and_keeps_the_notebooks_parameter_counts():
    assert TrialConfig().model == "crnn" and TrialConfig().model_args == "{}"
    assert build_model(TrialConfig(hidden_size=256)).num_parameters() == 990_404
    assert build_model(TrialConfig(hidden_size=128)).num_parameters() == 448_452
    torch.manual_seed(0)
    a = build_model(TrialConfig(hidden_size=16)).state_dict()
    torch.manual_seed(0)
    from ecg_ray.training.model import ECGModel

    b = ECGModel(hidden_size=16, dropout_rate=0.2).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same modules, the same draws


def test_crnns_memory_estimate_is_the_packing_formula_it_replaced():
    for h in (128, 256):  # ecg_ray.tuning.packing's GRU-only formula before the registry
        params, per_record = memory(TrialConfig(hidden_size=h), 9000)
        assert params == 3 * (1024 * h + h**2 + 2 * h) + 4 * h + 4 + 4800
        assert per_record == 4 * (129 * 71 * (1 + 16 + 16 / 4 + 32 / 4 + 32 / 16) + 71 * h * 4)
    bigger = memory(TrialConfig(hidden_size=128, gru_layers=2, bidirectional=True), 9000)[0]
    assert bigger == sum(p.numel() for p in build_model(TrialConfig(hidden_size=128, gru_layers=2, bidirectional=True)).parameters())


def test_an_unknown_model_lists_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        TrialConfig(model="resnet34")
    assert "'resnet34'" in str(err.value) and "'crnn'" in str(err.value) and "ecg-ray models" in str(err.value)


def test_model_args_are_checked_against_the_model_and_filled_in(cnn1d):
    t = TrialConfig(model="cnn1d", model_args={"width": 8})
    assert json.loads(t.model_args) == {"depth": 4, "kernel_size": 7, "width": 8}  # the defaults filled in
    assert TrialConfig(model="cnn1d", model_args='{"width":8}') == t == TrialConfig.from_dict(asdict(t))  # one form
    assert TrialConfig(model="cnn1d") != t
    for bad, words in (({"width": 2}, "'model_args.width' parameter must be an int in [4, 256]"),
                       ({"kernel_size": 4}, "an odd int in [3, 31]"),
                       ({"heads": 4}, "has no hyperparameter 'heads'"),
                       ("[1, 2]", "a mapping of the model's own hyperparameters")):
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            TrialConfig(model="cnn1d", model_args=bad)
    with pytest.raises(ConfigError, match="crnn.*no hyperparameter 'width'.*search.configs"):
        TrialConfig(model_args={"width": 8})


def test_a_grid_compares_architectures_each_with_its_own_args(cnn1d):
    space = SearchSpace.from_raw({"configs": [{"model": "crnn"}, {"model": "cnn1d", "model_args": {"width": 8}}],
                                  "lr": [1e-3, 5e-4]})
    trials = space.trials(42)
    assert [(t.model, json.loads(t.model_args).get("width"), t.lr) for t in trials.values()] == [
        ("crnn", None, 1e-3), ("crnn", None, 5e-4), ("cnn1d", 8, 1e-3), ("cnn1d", 8, 5e-4)]
    axis = SearchSpace.from_raw({"model": "cnn1d", "model_args": [{"width": 8}, {"width": 16}]}).trials(42)
    assert [json.loads(t.model_args)["width"] for t in axis.values()] == [8, 16]
    assert SearchSpace.from_raw({"model": ["crnn", "cnn1d"]}).n_trials == 2
    assert needed_plugins(space) == [PLUGIN] and needed_plugins(SearchSpace.from_raw({})) == []
    assert label({"model": "crnn", "hidden_size": 256}) == "H=256"
    assert label(asdict(trials["t0002"])) == "cnn1d depth=4 kernel_size=7 width=8"


def test_the_plugin_builds_and_estimates_its_memory(cnn1d):
    assert cnn1d.package == PLUGIN and "normalize" in cnn1d.reads
    t = TrialConfig(model="cnn1d", model_args={"width": 8, "depth": 3})
    net = build_model(t)
    assert memory(t, 9000)[0] == sum(p.numel() for p in net.parameters())
    assert net(torch.randn(2, 9000) * 300).shape == (2, 4)


def test_models_command_lists_each_model_with_its_package_and_hyperparameters(cnn1d, capsys):
    from ecg_ray.commands.main import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "crnn  (ecg_ray, the default)" in out and f"cnn1d  ({PLUGIN})" in out
    assert "model_args.width = 16: an int in [4, 256]" in out


def _model_file(path: Path, trial: TrialConfig, package: str | None) -> Path:
    from ecg_ray.results.inference.predict import MODEL_FORMAT
    from ecg_ray.training.loop import build_trial

    state = build_trial(trial, np.ones(4, dtype=np.float32))
    saved = {"format": MODEL_FORMAT, "model": state.model.state_dict(), "trial": asdict(trial), "model_package": package,
             "data_settings": {"target_length": 9000, "sampling_rate": 300, "min_length": 2700}, "data_hash": "0" * 16,
             "metrics": {"epoch": 0}}
    torch.save(saved, path)
    return path


def test_a_model_file_whose_plugin_is_not_installed_names_the_package(tmp_path, capsys):
    from ecg_ray.commands.main import main

    path = _model_file(tmp_path / "m.pt", TrialConfig(hidden_size=8), "ecg-ray-resnet")
    saved = torch.load(path, weights_only=True)
    saved["trial"]["model"] = "resnet18"  # trained where that plug-in was installed
    torch.save(saved, path)
    assert main(["predict", str(path), "synthetic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model 'resnet18' from the package ecg-ray-resnet" in err[0] and "pip install ecg-ray-resnet" in err[0]


def test_submit_and_k8s_say_which_plugin_packages_the_cluster_needs(cnn1d, tmp_path, capsys):
    import yaml

    from ecg_ray.commands.k8s import manifest
    from ecg_ray.tuning.submit import stage_upload

    exp = Path("experiments/plugin_cnn1d.yaml")
    text = manifest(str(exp), "s3://bucket/results", 2, "s3://bucket/src.zip")
    assert f"plug-in package(s) {PLUGIN}" in text and yaml.safe_load(text)["kind"] == "RayJob"
    assert "plug-in package" not in manifest("experiments/quick.yaml", "s3://bucket/results", 2, "s3://bucket/src.zip")
    stage, _, _ = stage_upload(".", str(exp))
    assert f"plug-in package(s) {PLUGIN}: install them on every node" in capsys.readouterr().out
    import shutil

    shutil.rmtree(stage)


def test_a_plugin_model_is_tuned_ranked_reported_predicted_and_rerun(cnn1d, tmp_path, tuning):
    """Workers on Ray find the plug-in by its entry point; its best model predicts and its trial reruns bit for bit."""
    from helpers import easy_records, read_table, tiny_experiment

    from ecg_ray.commands.main import main
    from ecg_ray.results.inference.predict import load_model

    exp_file = tiny_experiment(tmp_path, "plugin", tmp_path, search={"lr": 0.001, "model": "cnn1d",
                                                                     "model_args": [{"width": 8}, {"width": 16}]})
    out = tuning(exp_file, 2)
    assert "cnn1d depth=4 kernel_size=7 width=8" in out and "cnn1d depth=4 kernel_size=7 width=16" in out
    exp = tmp_path / "plugin"
    trials = read_table(str(exp / "report" / "trials.csv"))  # ranked by val macro-F1
    assert set(trials["model"]) == {"cnn1d"} and trials["rank"].tolist() == [1, 2]
    assert {json.loads(a)["width"] for a in trials["model_args"]} == {8, 16}
    assert "model_args" in out.split("trial_id", 1)[-1]  # the printed ranking shows the axis that varies
    models, saved = load_model(str(exp / "best_model.pt"))
    assert saved["trial"]["model"] == "cnn1d" and saved["model_package"] == PLUGIN
    records = easy_records(12, seed=5, prefix="P")
    pd.DataFrame({"record": records.ids, "signal": [np.asarray(s, dtype=np.float64) for s in records.signals]}) \
        .to_parquet(tmp_path / "new.parquet")
    assert main(["predict", str(exp / "best_model.pt"), str(tmp_path / "new.parquet"), "--out", str(tmp_path / "p.csv")]) == 0
    assert pd.read_csv(tmp_path / "p.csv")["record"].tolist() == records.ids
    assert main(["report", str(exp)]) == 0  # from the folder alone
    assert main(["rerun", str(exp), "t0001"]) == 0  # plain PyTorch, the same numbers as on Ray
