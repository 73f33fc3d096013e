"""ecg_ray: tune the CinC 2017 STFT-CNN-GRU rhythm classifier with Ray Tune + Ray Train.

    from ecg_ray import load_experiment, run_experiment
    outcome = run_experiment(load_experiment("experiments/quick.yaml"))

The stages, one package each (docs/architecture.md): config (YAML -> frozen dataclasses), data
(sources, preparation, the synthetic generator), training (plain PyTorch: model, loop, metrics),
tuning (the only package that imports Ray), results (the experiment folder, tables, figures, the
page), commands (the `ecg-ray` command line); pipeline runs them in order.
"""

from ecg_ray.config import load_experiment
from ecg_ray.pipeline import Outcome, run_experiment
from ecg_ray.provenance import __version__

__all__ = ["Outcome", "__version__", "load_experiment", "run_experiment"]
