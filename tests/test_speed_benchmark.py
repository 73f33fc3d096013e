"""benchmarks/speed.py --quick runs end to end, parts (a) to (c), and prints every column with sane values
(no timing targets here; docs/speed.md holds the measurements of every part)."""

import json
import math
import os
import subprocess
import sys

import pytest


@pytest.mark.ray
def test_speed_benchmark_quick_prints_every_part(tmp_path):
    out = tmp_path / "speed.json"
    run = subprocess.run([sys.executable, "benchmarks/speed.py", "--quick", "--records", "240", "--epochs", "2",
                          "--loop-epochs", "2", "--num-cpus", "2", "--no-compile", "--no-public", "--no-plain-tune", "--json", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for label in ("(a) notebook loop", "(b) ecg_ray loop", "precision: bf16, s/epoch", "channels_last: true, s/epoch",
                  "(c) ecg-ray tune", "overhead (whole command)", "busy CPU s, all processes (outside epochs)",
                  "start-up per trial", "tear-down per trial", "checkpoint per epoch", "peak memory per worker",
                  ):
        assert label in run.stdout, label
    r = json.loads(out.read_text())
    assert r["loops"]["notebook_epoch_s"] > 0 and r["loops"]["ecg_ray_epoch_s"] > 0 and r["loops"]["bf16_speedup"] > 0
    assert r["loops"]["channels_last_speedup"] > 0
    t = r["tune"]
    assert (t["trials"], t["epochs_run"], t["slots"]) == (2, 4, 2)  # two one-CPU trials at once on 2 CPUs
    assert 0 < t["epoch_time_sum_s"] < t["wall_s"] * t["slots"] and 0 < t["overhead"] < 1
    assert 0 < t["cpu_s"] <= t["wall_s"] * os.cpu_count() and t["cpu_s_outside_epochs"] == t["cpu_s"] - t["epoch_time_sum_s"]
    assert t["tune_wall_s"] < t["wall_s"] and t["startup_s_max"] > 0 and t["teardown_s_mean"] >= 0
    parts = t["startup_parts_s_mean"]  # the start-up's parts add up to it
    assert all(v > 0 for v in parts.values()) and math.isclose(sum(parts.values()), t["startup_s_mean"], rel_tol=1e-6)
    assert t["checkpoint_s_per_epoch"] > 0 and t["peak_rss_mb_per_worker"] > 100 and math.isnan(t["peak_gpu_mb_per_worker"])
    # (c'), the grid on Ray's public API, is left out here (--no-public): tests/test_fast_path.py runs both
    # paths and compares them bit for bit, and docs/speed.md reports what (c') measured. So is (e), the
    # grid under ASHA (no --asha): ASHA runs in most Ray tests, and docs/speed.md reports it.
    # (d), plain Ray Tune, too (--no-plain-tune): its bit-for-bit equality with (c) is what
    # tests/test_ray_tune.py's in-process comparison shows for every trial; docs/speed.md has its numbers.
    assert "public" not in r and "asha" not in r and "plain_tune" not in r
