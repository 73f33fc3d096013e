import pytest
import yaml

from ecg_ray.config import ExperimentConfig, TrialConfig, experiment_from_dict, load_experiment
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.errors import ConfigError


def test_seed_grid_is_the_notebooks_16_points():
    cfg = load_experiment("experiments/seed_grid.yaml")
    grid = cfg.grid()
    assert len(grid) == 16
    assert {(t.lr, t.hidden_size, t.dropout, t.optimizer) for t in grid} == {
        (lr, h, d, o) for lr in (1e-3, 5e-4) for h in (128, 256) for d in (0.2, 0.3) for o in ("adam", "sgd")
    }
    assert all(t.epochs == 20 and t.batch_size == 32 and t.seed == 42 for t in grid)
    assert cfg.scheduler.name == "asha"


def test_quick_is_small():
    cfg = load_experiment("experiments/quick.yaml")
    assert 2 <= len(cfg.grid()) <= 4 and cfg.epochs >= 2 and cfg.data.source == "synthetic"


def test_every_shipped_experiment_loads():
    from pathlib import Path

    files = sorted(Path("experiments").glob("*.yaml"))
    assert files
    for f in files:
        assert isinstance(load_experiment(f), ExperimentConfig)


def test_overrides_replace_keys():
    cfg = load_experiment("experiments/quick.yaml", **{"data.source": "synthetic", "storage_path": "/tmp/x", "name": "n2"})
    assert ExperimentDir.for_config(cfg).path == "/tmp/x/n2"


def test_uri_storage_is_kept():
    cfg = experiment_from_dict({"storage_path": "s3://bucket/results/", "name": "e"})
    assert ExperimentDir.for_config(cfg).path == "s3://bucket/results/e"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"lr": 0.1}, "unknown key 'lr'. Allowed top-level keys"),
        ({"data": {"sourse": "synthetic"}}, "Unknown key 'data.sourse'"),
        ({"data": {"source": "csv"}}, "The 'data.source' parameter must be one of 'cinc2017', 'parquet', 'pickle', 'synthetic'. Got 'csv' instead."),
        ({"data": {"source": "cinc2017"}}, "The 'data.path' parameter is required"),
        ({"data": {"target_length": "9000"}}, "The 'data.target_length' parameter must be an int in [256, 1000000]. Got '9000' instead."),
        ({"data": {"val_fraction": 0}}, "The 'data.val_fraction' parameter must be a float in (0.0, 1.0)"),
        ({"data": {"val_fraction": 0.6, "test_fraction": 0.5}}, "data.val_fraction + data.test_fraction"),
        ({"data": {"on_bad_record": "ignore"}}, "'data.on_bad_record' parameter must be one of 'error', 'skip'"),
        ({"search": {"lr": [-3]}}, "The 'lr' parameter must be a float in (0.0, 1.0]. Got -3 instead."),
        ({"search": {"optimizer": ["adamw"]}}, "The 'optimizer' parameter must be one of 'adam', 'sgd'. Got 'adamw' instead."),
        ({"search": {"hidden_size": [128, 12.5]}}, "The 'hidden_size' parameter must be an int"),
        ({"search": {"dropout": [1.0]}}, "The 'dropout' parameter must be a float in [0.0, 1.0)"),
        ({"search": {"epochs": []}}, "The 'search.epochs' parameter must be a value or a non-empty list"),
        ({"search": {"momentum": [0.9]}}, "The 'search key' parameter must be one of 'model', 'model_args', 'lr', 'hidden_size'"),
        ({"scheduler": {"name": "pbt"}}, "The 'scheduler.name' parameter must be one of 'asha', 'none'. Got 'pbt' instead."),
        ({"scheduler": {"reduction_factor": 1}}, "The 'scheduler.reduction_factor' parameter must be an int in [2, inf]"),
        ({"resources": {"gpus_per_worker": 0}}, "The 'resources.gpus_per_worker' parameter must be 'auto' or a float in (0.0, 8.0]"),
        ({"resources": {"gpus_per_worker": "half"}}, "must be 'auto' or a float in (0.0, 8.0]. Got 'half' instead."),
        ({"resources": {"gpus_per_worker": 1.5}}, "a fraction in (0, 1] or a whole number"),
        ({"resources": {"use_gpu": "yes"}}, "The 'resources.use_gpu' parameter must be one of 'auto', True, False"),
        ({"resources": {"cpus_per_trial_driver": -0.5}}, "'resources.cpus_per_trial_driver' parameter must be a float in [0.0, 64.0]"),
        ({"name": "a/b"}, "The 'name' parameter must be a non-empty folder name"),
        ({"seed": True}, "The 'seed' parameter must be an int"),
        ({"data": [1, 2]}, "The 'data' parameter must be a mapping"),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw, message):
    with pytest.raises(ConfigError) as err:
        experiment_from_dict(raw, origin="exp.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("exp.yaml")


def test_bad_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_experiment(bad)


def test_trial_config_is_checked_again_from_a_dict():
    assert TrialConfig.from_dict({"lr": 0.01, "optimizer": "sgd"}).optimizer == "sgd"
    with pytest.raises(ConfigError, match="made of the keys"):
        TrialConfig.from_dict({"lr": 0.01, "learning_rate": 3})
    with pytest.raises(ConfigError, match="'batch_size' parameter must be an int in \\[1, 65536\\]"):
        TrialConfig.from_dict({"batch_size": 0})
