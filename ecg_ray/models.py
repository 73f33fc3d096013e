"""Models by name, for plug-in authors and callers: the registry of ecg_ray.config.models.

    from ecg_ray.models import Hyperparameter, ModelSpec, build_model, get_model, list_models

A plug-in package declares a ModelSpec and names it under the entry-point group `ecg_ray.models`
(docs/plugins.md; plugins/ecg-ray-cnn1d is one).
"""

from ecg_ray.config.models import (
    DEFAULT_MODEL, ENTRY_POINT_GROUP, Hyperparameter, ModelSpec, build_model, describe, get_model, label, list_models,
    memory, model_args, needed_plugins, plugin_packages, plugins_note, require,
)

__all__ = [
    "DEFAULT_MODEL", "ENTRY_POINT_GROUP", "Hyperparameter", "ModelSpec", "build_model", "describe", "get_model", "label",
    "list_models", "memory", "model_args", "needed_plugins", "plugin_packages", "plugins_note", "require",
]
