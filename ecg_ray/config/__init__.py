"""Experiment files (YAML) -> typed, frozen, validated config objects. Pure data: reading an
experiment file imports no torch, pandas, scikit-learn or Ray.

    python -c "from ecg_ray.config import load_experiment; print(load_experiment('experiments/quick.yaml'))"

    constraints   the declared names and ranges, one validator, one message format
    sections      data, one trial's knobs, scheduler, resources
    search        the search space: grid, random draws, Optuna distributions, trial keys
    experiment    ExperimentConfig, and what crosses the Ray boundary (RunSettings, WorkerSpec)
    loader        YAML reading and command-line overrides
    extension     which edits of an experiment file `ecg-ray tune --extend` accepts
    models        the model registry: built-in crnn and installed plug-ins (public as ecg_ray.models)
"""

from ecg_ray.config.constraints import (
    AUGMENTATIONS, CLASS_BALANCE, DEFAULT_EXPORT_FORMATS, DEFAULT_STORAGE, DIFFICULTIES, DISTRIBUTIONS, EXPORT_FORMATS,
    FAST_PATH, LR_SCHEDULES, NORMALIZE, OPTIMIZER_NAMES, PRECISIONS, SCHEDULER_NAMES, SEARCH_ALGORITHMS, SOURCE_RULES,
    TRAIN_CROPS, Constraint, Interval, Options, Rule, SourceRule, fail, validate,
)
from ecg_ray.config.experiment import CUBLAS_WORKSPACE, ExperimentConfig, RunSettings, WorkerSpec
from ecg_ray.config.loader import experiment_from_dict, load_experiment, with_data
from ecg_ray.config.search import BATCH_KEY, SearchSpace
from ecg_ray.config.sections import (
    CONFIGS_KEY, SEARCH_KEYS, DataConfig, ReportConfig, ResourcesConfig, SchedulerConfig, TrackingConfig, TrialConfig,
)

__all__ = [
    "AUGMENTATIONS", "BATCH_KEY", "CLASS_BALANCE", "CONFIGS_KEY", "CUBLAS_WORKSPACE", "DEFAULT_EXPORT_FORMATS",
    "DEFAULT_STORAGE", "DIFFICULTIES", "DISTRIBUTIONS", "EXPORT_FORMATS", "FAST_PATH", "LR_SCHEDULES", "NORMALIZE",
    "OPTIMIZER_NAMES", "PRECISIONS", "SCHEDULER_NAMES", "SEARCH_ALGORITHMS", "SEARCH_KEYS", "SOURCE_RULES",
    "TRAIN_CROPS", "Constraint", "DataConfig", "ExperimentConfig", "Interval", "Options", "ResourcesConfig", "Rule",
    "ReportConfig", "RunSettings", "SchedulerConfig", "SearchSpace", "SourceRule", "TrackingConfig", "TrialConfig", "WorkerSpec", "experiment_from_dict",
    "fail", "load_experiment", "validate", "with_data",
]
