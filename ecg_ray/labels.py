"""The four rhythm classes, by index: a leaf module (it imports nothing of ecg_ray), so the model
(ecg_ray.training.model), which the model registry in ecg_ray.config builds, needs no config.
ecg_ray.schema re-exports them beside the metric and column names."""

LABEL_NAMES = ("N", "A", "O", "~")  # the challenge's label letters, by class index
CLASS_NAMES = ("Normal", "AF", "Other", "Noisy")
CLASS_KEYS = ("N", "A", "O", "noisy")  # metric-name suffixes; '~' is awkward in column names
NUM_CLASSES = len(LABEL_NAMES)
