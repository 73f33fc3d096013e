"""A checkpoint describes itself: it loads, safely, and is checked without Ray or its Ray folder."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Payload

from ecg_ray.config import TrialConfig
from ecg_ray.errors import EcgRayError
from ecg_ray.training.loop import build_trial, check_checkpoint, checkpoint, load_state_dict, read_checkpoint, train_epoch

ROOT = Path(__file__).resolve().parents[1]
TRIAL = TrialConfig(hidden_size=8, epochs=3)
WEIGHTS = np.array([0.5, 0.7, 0.6, 1.0], dtype=np.float32)


@pytest.fixture
def saved(tmp_path) -> Path:
    state = build_trial(TRIAL, WEIGHTS)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 1024)).astype(np.float32), rng.integers(0, 4, 16)
    train_epoch(state, x, y, batch_size=8)
    path = tmp_path / "trial_state.pt"
    torch.save(checkpoint(state, TRIAL, "hash123", {"target_length": 1024}), path)
    return path


def test_it_loads_and_checks_in_plain_python_without_ray(saved):
    code = (
        "import sys\nfrom ecg_ray.config import TrialConfig\nfrom ecg_ray.training.loop import read_checkpoint, check_checkpoint\n"
        f"c = read_checkpoint({str(saved)!r})\n"
        f"check_checkpoint(c, TrialConfig(**c['trial']), 'hash123', 'x')\n"
        "print(c['trial']['hidden_size'], c['epoch'], c['data_hash'], c['data_settings']['target_length'], "
        "{'ecg_ray', 'numpy', 'python', 'torch'} <= set(c['versions']), 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["8", "1", "hash123", "1024", "True", "False"]


def test_it_is_read_with_weights_only(saved):
    """Nothing in it needs unpickling of arbitrary objects: torch's safe loader reads it whole."""
    c = torch.load(saved, weights_only=True)
    assert c["format"] == 1 and c["versions"]["torch"] == str(torch.__version__)


def test_restoring_it_continues_the_rngs_exactly(saved):
    state = build_trial(TRIAL, WEIGHTS)
    load_state_dict(state, read_checkpoint(saved))
    first = (np.random.rand(), torch.rand(1).item())
    load_state_dict(state, read_checkpoint(saved))
    assert (np.random.rand(), torch.rand(1).item()) == first
    assert state.epoch == 1


@pytest.mark.parametrize(
    "trial, data_hash, message",
    [
        (replace(TRIAL, lr=0.5), "hash123", "was saved by trial"),
        (TRIAL, "otherdata", "was trained on data hash123"),
    ],
)
def test_a_checkpoint_of_another_trial_or_other_data_is_refused(saved, trial, data_hash, message):
    with pytest.raises(EcgRayError, match=message):
        check_checkpoint(read_checkpoint(saved), trial, data_hash, str(saved))




def test_a_poisoned_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "trial_state.pt"
    torch.save({"format": 1, "model": Payload(marker)}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        read_checkpoint(path)
    assert not marker.exists()
