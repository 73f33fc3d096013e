"""The report's figures (valid PNG files) and its one-page HTML (self-contained, provenance, renders in Chromium)."""

import json
import re
import shutil

import matplotlib.image
import pytest
from browser import chromium, load
from test_report import _trial

from ecg_ray.results.report import write_report
from ecg_ray.schema import confusion_columns

FIGURES = ["learning_curves", "confusion_val", "hyperparameters", "per_class_f1", "confusion_test"]


@pytest.fixture
def exp(tmp_path):
    """Two configs x two seeds, one trial stopped by ASHA, a test evaluation, runs and splits recorded."""
    exp = tmp_path / "results" / "paper"
    for key, lr, seed, f1s in (("t0000", 0.001, 42, [0.3, 0.6, 0.55]), ("t0001", 0.001, 43, [0.35, 0.58, 0.6]),
                               ("t0002", 0.003, 42, [0.2, 0.25]), ("t0003", 0.003, 43, [0.3, 0.5, 0.52])):
        _trial(exp, key, lr, f1s)
        params = exp / f"_trial_driver_{key}_lr={lr}" / "params.json"
        params.write_text(json.dumps(json.loads(params.read_text()) | {"seed": seed, "epochs": 3, "trial_key": key}))
    (exp / "trial_status.json").write_text(json.dumps({k: {"status": "TERMINATED"} for k in ("t0000", "t0001", "t0002", "t0003")}))
    config = {"name": "paper", "scheduler": {"name": "asha"}, "search": {"lr": [0.001, 0.003], "seed": [42, 43]}}
    record = {"config": config, "data_hash": "feedc0ffee123456", "created": "2026-11-26T09:00:00+0000",
              "data": {"source": "synthetic(n=400)", "fingerprint": "f" * 64, "skipped": [],
                       "settings": {"source": "synthetic", "target_length": 9000, "sampling_rate": 300, "seed": 42},
                       "lengths": {"min": 2700, "max": 18000, "median": 9000.0, "padded": 10, "trimmed": 20}}}
    (exp / "ecg_ray_experiment.json").write_text(json.dumps(record))
    (exp / "data_splits.json").write_text(json.dumps({"ids": {"train": ["a"] * 240, "val": ["b"] * 80, "test": ["c"] * 80}}))
    (exp / "runs.json").write_text(json.dumps([{
        "started": "2026-11-26T09:00:01+0000", "ended": "2026-11-26T09:01:40+0000", "wall_s": 99.0, "resume": False,
        "trials": 4, "cluster": "local", "nodes": 1, "cpus": 2.0, "gpus": 0.0, "host": "box", "git_commit": "0e12bc4abc",
        "versions": {"ecg_ray": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "ray": "2.60.0", "numpy": "2.1"}}]))
    cm = dict(zip(confusion_columns(), [20, 1, 1, 0, 1, 5, 0, 0, 2, 0, 9, 1, 0, 0, 1, 2]))
    test = [{"config_rank": 1, "trial_id": k, "lr": 0.001, "hidden_size": 128, "dropout": 0.2, "optimizer": "adam",
             "batch_size": 32, "epochs": 3, "seed": s, "best_val_epoch": 2, "n_test": 43, "test_macro_f1": 0.7,
             "test_macro_f1_ci_low": 0.6, "test_macro_f1_ci_high": 0.8, "test_challenge_f1": 0.72} | cm
            for k, s in (("t0000", 42), ("t0001", 43))]
    (exp / "test_results.json").write_text(json.dumps(test))
    return exp


def test_every_figure_is_a_valid_png(exp):
    _, written, problems = write_report(str(exp))
    assert problems == []
    pngs = sorted(p for p in written if p.endswith(".png"))
    assert sorted(p.rsplit("/", 1)[1][:-4] for p in pngs) == sorted(FIGURES)
    for path in pngs:
        raw = open(path, "rb").read()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
        image = matplotlib.image.imread(path)  # decodes every chunk: a truncated file fails here
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0, path


def test_no_test_evaluation_no_test_figure_and_one_seed_still_draws(exp):
    (exp / "test_results.json").unlink()
    for folder in exp.glob("_trial_driver_t000[13]_*"):  # seed 43 gone: one seed per config
        shutil.rmtree(folder)
    _, written, _ = write_report(str(exp))
    names = {p.rsplit("/", 1)[1] for p in written}
    assert "confusion_test.png" not in names and "test.csv" not in names and "per_class_f1.png" in names
    assert "One seed per config" in (exp / "report" / "index.html").read_text()


def test_the_page_is_self_contained_and_states_how_the_numbers_were_made(exp):
    _, written, _ = write_report(str(exp))
    html = (exp / "report" / "index.html").read_text()
    assert str(exp / "report" / "index.html") in written
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)  # nothing from the network
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert html.count("<img ") == len(FIGURES)
    for fact in ("feedc0ffee123456", "train 240, val 80, test 80", "42, 43", "0e12bc4abc", "2.13.0+cpu", "2.60.0",
                 "3.11.7", "synthetic(n=400)", "2026-11-26T09:01:40+0000", "Held-out test split", "Configs over seeds",
                 "never used for training, ranking or early stopping", "name: paper"):
        assert fact in html, fact


def test_a_killed_run_and_damage_are_said_on_the_page(exp):
    runs = json.loads((exp / "runs.json").read_text())
    (exp / "runs.json").write_text(json.dumps([runs[0] | {"ended": None, "wall_s": None}]))
    (exp / "test_results.json").write_text("[{")
    _, _, problems = write_report(str(exp), allow_partial=True)
    html = (exp / "report" / "index.html").read_text()
    assert "did not end (killed?)" in html
    assert any("test_results.json" in p for p in problems) and "test_results.json" in html


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_the_page_renders_in_headless_chromium(exp):
    write_report(str(exp))
    page = load((exp / "report" / "index.html").as_uri())
    assert page["title"] == "ecg_ray report: paper"
    assert page["console_errors"] == [] and page["exceptions"] == []
    assert all(url.startswith(("file:", "data:")) for url in page["requests"])
    assert len(page["images"]) == len(FIGURES)
    for image in page["images"]:
        assert image["complete"] and min(image["natural"]) > 0 and min(image["shown"]) > 0, image
