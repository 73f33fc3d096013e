"""The aggregator over experiment folders written here in Tune's layout."""

import html
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ecg_ray.errors import ConfigError
from helpers import fake_epoch as _epoch, fake_trial as _trial
from ecg_ray.results.tables.export import EXPORTERS, export, to_markdown
from ecg_ray.results.report import build_report, write_report
from ecg_ray.results.tables.ranking import comparable


@pytest.fixture
def exp(tmp_path):
    exp = tmp_path / "exp"
    _trial(exp, "t0", 0.001, [0.2, 0.5, 0.4, 0.45])
    _trial(exp, "t1", 0.0005, [0.1, 0.3])  # stopped by ASHA after 2 of 4 epochs
    _trial(exp, "t2", 0.003, [0.3, 0.6, 0.55, 0.5], tail='{"trial_id": "t2", "epoch": 5, "val_ma')  # cut-off line
    (exp / "trial_status.json").write_text(json.dumps({k: {"status": "TERMINATED"} for k in ("t0", "t1", "t2")}))
    (exp / "ecg_ray_experiment.json").write_text(json.dumps({"config": {"scheduler": {"name": "asha"}}}))
    return exp


def test_ranks_by_best_val_macro_f1(exp):
    trials, hist = build_report(exp)
    assert trials["trial_id"].tolist() == ["t2", "t0", "t1"]
    assert trials["rank"].tolist() == [1, 2, 3]
    top = trials.iloc[0]
    assert (top["best_epoch"], top["best_val_macro_f1"], top["last_val_macro_f1"], top["epochs_run"]) == (2, 0.6, 0.5, 4)
    assert trials.set_index("trial_id")["early_stopped"].to_dict() == {"t0": False, "t1": True, "t2": False}
    assert len(hist) == 10 and set(hist.columns) >= {"trial_id", "epoch", "lr", "val_macro_f1", "cm_true3_pred3"}
    assert pd.api.types.is_float_dtype(trials["best_val_macro_f1"])  # numbers, not formatted strings


def test_interrupted_trial_is_marked_unfinished(exp):
    (exp / "trial_status.json").write_text(json.dumps({"t0": {"status": "TERMINATED"}, "t2": {"status": "TERMINATED"}}))
    trials, _ = build_report(exp)
    row = trials.set_index("trial_id").loc["t1"]
    assert row["status"] == "UNFINISHED" and not row["early_stopped"]


def test_ties_break_on_val_loss_then_config(tmp_path):
    exp = tmp_path / "e"
    _trial(exp, "a", 0.001, [0.5], losses=[0.9])
    _trial(exp, "b", 0.002, [0.5], losses=[0.8])
    _trial(exp, "c", 0.0005, [0.5], losses=[0.8])
    trials, _ = build_report(exp)
    assert trials["trial_id"].tolist() == ["c", "b", "a"]


def test_a_re_run_epoch_counts_once(tmp_path):
    exp = tmp_path / "e"
    _trial(exp, "a", 0.001, [0.1, 0.2])
    with open(exp / "_trial_driver_a_lr=0.001" / "result.json", "a") as f:
        f.write(json.dumps(_epoch("a", 2, 0.7)) + "\n")  # epoch 2 again, after a restore
    trials, hist = build_report(exp)
    assert len(hist) == 2 and trials.iloc[0]["best_val_macro_f1"] == 0.7


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(ConfigError, match="is not an experiment folder: it holds no ecg_ray_experiment.json"):
        build_report(tmp_path)
    (tmp_path / "ecg_ray_experiment.json").write_text(json.dumps({"config": {"name": "x"}}))
    with pytest.raises(ConfigError, match="no finished epoch"):  # started, nothing finished yet
        build_report(tmp_path)


@pytest.mark.parametrize("command", ["report", "compare", "extend"])
@pytest.mark.parametrize("what", ["report/", "storage folder", "data folder"])
def test_a_folder_that_is_not_an_experiment_says_what_it_is(command, what, tmp_path, capsys):
    from helpers import fake_experiment

    from ecg_ray.commands.main import main

    exp = fake_experiment(tmp_path / "store" / "e1", [("t0000", {"lr": 1e-3}, [0.3])])
    write_report(exp)
    data = tmp_path / "training2017"
    data.mkdir()
    (data / "A00001.hea").write_text("A00001 1 300 9000\n")
    (data / "REFERENCE.csv").write_text("A00001,N\n")
    given = {"report/": exp / "report", "storage folder": tmp_path / "store", "data folder": data}[what]
    argv = {"report": ["report", str(given)], "compare": ["compare", str(given), str(exp), "--out", str(tmp_path / "cmp")],
            "extend": ["tune", "experiments/quick.yaml", "--extend", str(given)]}[command]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    expected = {"report/": f"this is the report/ of the experiment folder {exp}; pass {exp}",
                "storage folder": f"holding 1 experiment folder(s) ({exp}); pass one of them",
                "data folder": "it holds ECG records (a data folder); pass it to `ecg-ray tune --data`"}[what]
    assert "not an experiment folder" in line and expected in line
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_every_export_format(exp, tmp_path, fmt):
    trials, hist = build_report(exp)
    (path,) = [p for p in export({"trials": trials}, tmp_path / "out", [fmt])]
    assert path.suffix == EXPORTERS[fmt][0] and path.stat().st_size > 0
    if fmt == "csv":
        back = pd.read_csv(path)
        pd.testing.assert_series_equal(back["best_val_macro_f1"], trials["best_val_macro_f1"])
    elif fmt == "json":
        assert [r["trial_id"] for r in json.loads(path.read_text())] == ["t2", "t0", "t1"]
    elif fmt == "parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(path), trials)
    elif fmt == "markdown":
        lines = path.read_text().splitlines()
        assert lines[0].startswith("| rank | trial_id | lr") and len(lines) == 2 + len(trials)
        assert "| 0.6000 |" in lines[2]
    elif fmt == "latex":
        text = path.read_text()
        assert text.startswith("\\begin{tabular}") and "best\\_val\\_macro\\_f1" in text and text.count("\\\\") == 1 + len(trials)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary file left behind


def test_unknown_format_lists_the_valid_ones(exp, tmp_path):
    trials, _ = build_report(exp)
    with pytest.raises(ConfigError, match="Choose from csv, markdown, json, parquet, latex"):
        export({"trials": trials}, tmp_path, ["xlsx"])


def test_write_report_rebuilds_identical_tables(exp):
    _, first, _ = write_report(str(exp), allow_partial=True)
    before = {Path(p).name: Path(p).read_bytes() for p in first}
    _, second, _ = write_report(str(exp), allow_partial=True)
    assert {Path(p).name: Path(p).read_bytes() for p in second} == before
    assert set(before) >= {"trials.csv", "trials.md", "trials.json", "history.csv"}


def test_report_reads_and_writes_a_storage_uri(exp):
    """Bucket URIs go through pyarrow.fs; file:// exercises the same code without a cloud."""
    trials, written, _ = write_report(f"file://{exp}", allow_partial=True)
    assert written[0] == f"file://{exp}/report/trials.csv"
    assert pd.read_csv(exp / "report" / "trials.csv")["trial_id"].tolist() == trials["trial_id"].tolist()


def test_comparable_drops_run_specific_columns(exp):
    trials, _ = build_report(exp)
    assert {"trial_id", "wall_time_s", "node_ids"}.isdisjoint(comparable(trials).columns)
    assert "best_val_macro_f1" in comparable(trials).columns


def test_markdown_escapes_nothing_it_should_not():
    text = to_markdown(pd.DataFrame({"a": [1.0, 0.00001], "b": ["x", "y"]}))
    assert text.splitlines()[1] == "|---:|---|" and "1e-05" in text


def _drop_key(line_no, key):
    def edit(exp):
        path = next(exp.glob("_trial_driver_t0_*")) / "result.json"
        lines = path.read_text().splitlines()
        row = json.loads(lines[line_no - 1])
        del row[key]
        lines[line_no - 1] = json.dumps(row)
        path.write_text("\n".join(lines) + "\n")

    return edit


def _cut_line(line_no):
    def edit(exp):
        path = next(exp.glob("_trial_driver_t0_*")) / "result.json"
        lines = path.read_text().splitlines()
        lines[line_no - 1] = lines[line_no - 1][:40]
        path.write_text("\n".join(lines) + "\n")

    return edit


def _set_key(line_no, key, value):
    def edit(exp):
        path = next(exp.glob("_trial_driver_t0_*")) / "result.json"
        lines = path.read_text().splitlines()
        lines[line_no - 1] = json.dumps(json.loads(lines[line_no - 1]) | {key: value})
        path.write_text("\n".join(lines) + "\n")

    return edit


def _cut_tail(path, keep):
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:keep]))


DAMAGE = {
    "corrupt params.json": (lambda e: (next(e.glob("_trial_driver_t1_*")) / "params.json").write_text("{not json"),
                            ["params.json is damaged: not valid JSON", "trial folder _trial_driver_t1_lr=0.0005 was skipped"]),
    "corrupt trial_status.json": (lambda e: (e / "trial_status.json").write_text('{"t0": {"sta'),
                                  ["trial_status.json is damaged", "Trial statuses are unknown"]),
    "corrupt experiment file": (lambda e: (e / "ecg_ray_experiment.json").write_bytes(b"\x00\x01"),
                                ["ecg_ray_experiment.json is damaged", "scheduler is unknown"]),
    "a line cut off mid-file": (_cut_line(2), ["result.json, line 2: cut off or not JSON", "trial t0: epoch(s) 2 missing"]),
    "an epoch without the ranking metric": (_drop_key(3, "val_macro_f1"), ["result.json, line 3 (epoch 3) lacks val_macro_f1; that epoch was skipped"]),
    "an epoch without a per-class metric": (_drop_key(2, "val_f1_A"), ["result.json, line 2 (epoch 2) lacks val_f1_A; left empty in the tables"]),
    "a NaN ranking metric": (_set_key(2, "val_macro_f1", float("nan")), ["result.json, line 2 (epoch 2): val_macro_f1 is nan, not a number in 0..1; that epoch was skipped"]),
    "a NaN score": (_set_key(2, "val_acc", float("nan")), ["result.json, line 2 (epoch 2): val_acc not a number; shown as recorded"]),
    "a finished trial's result.json emptied": (lambda e: (next(e.glob("_trial_driver_t1_*")) / "result.json").write_text(""),
                                               ["trial t1 is damaged", "records 2 epoch(s) (TERMINATED)", "result.json is empty", "left out of every table"]),
    "a finished trial's result.json deleted": (lambda e: (next(e.glob("_trial_driver_t1_*")) / "result.json").unlink(),
                                               ["trial t1 is damaged", "result.json is missing", "left out of every table"]),
    "a finished trial's last epochs lost": (lambda e: _cut_tail(next(e.glob("_trial_driver_t0_*")) / "result.json", 2),
                                            ["trial t0 is damaged", "records 4 epoch(s) but its result files hold 2", "is short"]),
}



def _ours(err: str) -> str:
    """ecg-ray's own stderr lines; a Ray session of an earlier test may stream its logs there too."""
    return "".join(line for line in err.splitlines(keepends=True) if line.startswith("ecg-ray:"))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_folder_is_named_and_needs_allow_partial(case, tmp_path, capsys):
    from ecg_ray.commands.main import main

    exp = tmp_path / "exp"
    _trial(exp, "t0", 0.001, [0.2, 0.5, 0.4, 0.45])
    _trial(exp, "t1", 0.0005, [0.1, 0.3])
    statuses = {"t0": {"status": "TERMINATED", "last_epoch": 4}, "t1": {"status": "TERMINATED", "last_epoch": 2}}
    (exp / "trial_status.json").write_text(json.dumps(statuses))
    (exp / "ecg_ray_experiment.json").write_text(json.dumps({"config": {"scheduler": {"name": "asha"}}}))
    assert main(["report", str(exp)]) == 0 and "warning" not in _ours(capsys.readouterr().err)  # whole: no complaint
    assert not (exp / "report" / "problems.txt").exists()
    shutil.rmtree(exp / "report")
    make, expected = DAMAGE[case]
    make(exp)
    assert main(["report", str(exp)]) == 2
    err = _ours(capsys.readouterr().err)
    assert err.count("\n") == 1 and "No table was written" in err and "--allow-partial" in err
    for fragment in expected:
        assert fragment in err
    assert not (exp / "report").exists()
    assert main(["report", str(exp), "--allow-partial", "--format", "csv", "markdown", "latex"]) == 0
    err = _ours(capsys.readouterr().err)
    assert all(fragment in err for fragment in expected) and err.startswith("ecg-ray: warning: ")
    assert (exp / "report" / "trials.csv").is_file()
    # Named beside and under the tables too: a table copied into a paper still says what it leaves out.
    report = exp / "report"
    listed = (report / "problems.txt").read_text()
    page = (report / "index.html").read_text()
    markdown, latex = (report / "trials.md").read_text(), (report / "configs.tex").read_text()
    for fragment in expected:
        assert fragment in listed and html.escape(fragment, quote=False) in page
    assert "> **Problem:**" in markdown and "% ecg-ray problem: " in latex


def test_the_cut_off_line_of_a_run_that_was_resumed_is_not_damage(tmp_path):
    """A killed driver can cut the last line; the resumed run re-reports that epoch, so nothing is lost."""
    exp = tmp_path / "exp"
    _trial(exp, "t0", 0.001, [0.2, 0.5], tail='{"trial_id": "t0", "epoch": 3, "val_ma')
    second = exp / "_trial_driver_t0_resumed"
    second.mkdir()
    (second / "params.json").write_text((next(exp.glob("_trial_driver_t0_lr*")) / "params.json").read_text())
    later = [dict(_epoch("t0", e, f), timestamp=10**10) for e, f in ((3, 0.6), (4, 0.55))]
    (second / "result.json").write_text("".join(json.dumps(r) + "\n" for r in later))
    problems = []
    trials, hist = build_report(exp, problems)
    assert problems == [] and hist["epoch"].tolist() == [1, 2, 3, 4] and trials.iloc[0]["best_val_macro_f1"] == 0.6
    assert hist["time_total_s"].tolist() == [3.0, 6.0, 6.0 + 9.0, 6.0 + 12.0]  # wall time runs on across the resume


LRS = [1e-4, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3, 2e-3, 3e-3]
SHAPES = {  # every shape of finished results the report can meet: (key, params, val macro-F1 per epoch)
    "all tie (every model calls every record Normal)": [(f"t{i:04d}", {"lr": lr}, [0.1842]) for i, lr in enumerate(LRS)],
    "all tie, two keys, two epochs": [(f"t{i:04d}", {"lr": lr, "hidden_size": [128, 256][i % 2]}, [0.1842, 0.1842])
                                      for i, lr in enumerate(LRS)],
    "all tie over two seeds (CIs of zero width)": [(f"t{i:04d}", {"lr": LRS[i // 2], "seed": 42 + i % 2}, [0.25])
                                                   for i in range(16)],
    "all zero": [(f"t{i:04d}", {"lr": lr}, [0.0, 0.0]) for i, lr in enumerate(LRS)],
    "one trial": [("t0000", {}, [0.3])],
    "two tied trials": [("t0000", {"lr": 1e-3}, [0.3]), ("t0001", {"lr": 1e-4}, [0.3])],
    "all perfect": [(f"t{i:04d}", {"lr": lr}, [1.0]) for i, lr in enumerate(LRS)],
    "one differs by a hair": [(f"t{i:04d}", {"lr": lr}, [0.5 + (1e-12 if i == 3 else 0)]) for i, lr in enumerate(LRS)],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_of_results_keeps_its_tables_and_names_what_cannot_be_computed(shape, tmp_path, capsys):
    """Degenerate results never cost the report: the tables, figures and page are written, and an analysis
    that has nothing to work on says so in one line (a run whose trials all tie lost its report)."""
    from helpers import fake_experiment

    exp = fake_experiment(tmp_path / "shaped", SHAPES[shape], costs=None)
    trials, written, problems = write_report(exp)
    assert problems == [] and len(trials) == len(SHAPES[shape])
    names = {Path(p).name for p in written}
    assert {"trials.csv", "configs.csv", "history.csv", "pareto.csv", "index.html", "learning_curves.png"} <= names
    page = (exp / "report" / "index.html").read_text()
    scores = {f for _, _, f1s in SHAPES[shape] for f in f1s[-1:]}
    if len(SHAPES[shape]) >= 8 and len(scores) == 1:
        line = "Importance: every config scored the same"
        assert line in page and "importance.csv" not in names
        (said,) = [l for l in capsys.readouterr().out.splitlines() if line in l]
        assert said.startswith("[ecg-ray] report: ")


def test_whole_numbers_read_as_whole_numbers_where_a_row_has_none():
    """An ensemble's row has no seed, fold or epoch: the column turns float, and must not print 42.0000."""
    df = pd.DataFrame({"trial_id": ["t0000", "ensemble"], "seed": [42.0, float("nan")], "fold": [1.0, float("nan")],
                       "best_val_epoch": [15.0, float("nan")], "test_macro_f1": [0.5, 0.25]})
    md = to_markdown(df)
    assert "| t0000 | 42 | 1 | 15 | 0.5000 |" in md and "| ensemble |  |  |  | 0.2500 |" in md
    from ecg_ray.results.tables.export import to_latex

    assert "t0000 & 42 & 1 & 15 & 0.5000" in to_latex(df)


def test_the_test_confusion_matrix_is_of_the_model_best_model_pt_ships():
    from ecg_ray.results.page.figures import shipped_test_row

    rows = pd.DataFrame({"config_rank": [1, 1, 1, 2], "trial_id": ["t0001", "t0003", "ensemble", "t0000"],
                         "evaluated": ["trial", "trial", "ensemble of 2", "best trial"], "seed": [42, 43, None, 42],
                         "best_val_epoch": [3, 4, None, 2]})
    row, title = shipped_test_row(rows, "t0001")
    assert row["trial_id"] == "ensemble" and "best_model.pt, the ensemble of 2" in title
    row, title = shipped_test_row(rows[rows["trial_id"] != "ensemble"], "t0001")
    assert row["trial_id"] == "t0001" and title == "Test: t0001, epoch 3"
