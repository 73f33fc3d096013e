"""Models by name: one registry, one `build_model`, plug-ins by entry point (public as ecg_ray.models).

    ecg-ray models                      # the registered models, their packages and hyperparameters
    python -c "from ecg_ray.models import list_models; print(list_models())"

`search.model` names the model a trial trains (`crnn`, the notebook's STFT-CNN-GRU, by default;
a list makes it a grid axis) and `search.model_args` its own hyperparameters. Everything that
builds, loads, costs, packs or describes a model goes through this module, the way torchvision's
`get_model` / `list_models` and timm's `create_model` do.

A model is a `ModelSpec`: how to build it from its `model_args` (the trial keys it reads, such as
`hidden_size` or `dropout`, and its own hyperparameters, each declared with a default and what it
allows), its memory estimate for GPU packing, and a short label for progress lines. A checkpoint
carries the trial (so its model and model_args) and the package the model came from, which is
all it takes to rebuild it (nanoGPT's `model_args`).

An installed package adds models through the entry-point group `ecg_ray.models` (the packaging
standard pytest and MLflow use for plug-ins): each entry point names a ModelSpec, e.g. in its
pyproject.toml

    [project.entry-points."ecg_ray.models"]
    cnn1d = "ecg_ray_cnn1d:MODEL"

An experiment file names a registered model, never an import path, so a file stays data. The
repository ships one plug-in, plugins/ecg-ray-cnn1d (docs/plugins.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

from ecg_ray.config.constraints import NUMBER, Constraint, Interval, fail, validate
from ecg_ray.errors import ConfigError, EcgRayError

ENTRY_POINT_GROUP = "ecg_ray.models"
DEFAULT_MODEL = "crnn"
BUILT_IN = "ecg_ray"  # the package of the models defined here


@dataclass(frozen=True)
class Hyperparameter:
    """One of a model's own hyperparameters: its default, what it allows (a Constraint), what it does."""

    default: Any
    allowed: Constraint
    help: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """A model architecture, declared.

    Args:
        name: what `search.model` calls it (lowercase letters, digits, '_' and '-').
        build: `build(model_args) -> torch.nn.Module` mapping a (batch, samples) float32 signal to
            (batch, 4) logits. Its weights are drawn from torch's global RNG, which the trial seeds
            first, so the same trial gives the same model.
        about: one line for `ecg-ray models` and the configuration reference.
        reads: the trial keys (TrialConfig fields) the model reads besides its own hyperparameters,
            e.g. ("dropout", "normalize"). Training keys (lr, optimizer, epochs, ...) apply to every model.
        hyperparameters: its own, by name (`search.model_args: {name: value}`).
        memory: `memory(model_args, samples) -> (parameters, bytes of activations per record)` for
            GPU packing (ecg_ray.tuning.packing); None: parameters counted, activations estimated
            generously from the input size.
        label: `label(model_args) -> str` for progress lines; None: the name and its hyperparameters.
        package: the distribution the model comes from (filled in from its entry point).
    """

    name: str
    build: Callable[[dict], Any]
    about: str = ""
    reads: tuple[str, ...] = ()
    hyperparameters: Mapping[str, Hyperparameter] = field(default_factory=dict)
    memory: Callable[[dict, int], tuple[int, float]] | None = None
    label: Callable[[dict], str] | None = None
    package: str = BUILT_IN


# --- the built-in model -----------------------------------------------------------------------

CRNN_READS = ("hidden_size", "dropout", "gru_layers", "bidirectional", "conv_channels", "n_fft", "hop_length",
              "normalize", "channels_last")


def _build_crnn(args: dict):
    from ecg_ray.training.model import ECGModel

    return ECGModel(hidden_size=args["hidden_size"], dropout_rate=args["dropout"], gru_layers=args["gru_layers"],
                    bidirectional=args["bidirectional"], conv_channels=args["conv_channels"], n_fft=args["n_fft"],
                    hop_length=args["hop_length"], normalize=args["normalize"], channels_last=args["channels_last"])


def _crnn_memory(args: dict, samples: int) -> tuple[int, float]:
    """The STFT-CNN-GRU's parameters and activations per record: the spectrogram, two conv blocks'
    outputs before and after pooling, and the GRU's input and states (every layer, both ways)."""
    h, c1, layers, ways = args["hidden_size"], args["conv_channels"], args["gru_layers"], 2 if args["bidirectional"] else 1
    bins, frames = args["n_fft"] // 2 + 1, samples // args["hop_length"] + 1
    gru_in = 2 * c1 * (bins // 4)
    gru = ways * 3 * (gru_in * h + h * h + 2 * h) + (layers - 1) * ways * 3 * (ways * h * h + h * h + 2 * h)
    params = gru + (ways * h + 1) * 4 + (9 + 1) * c1 + (9 * c1 + 1) * 2 * c1
    per_record = 4 * (bins * frames * (1 + c1 + c1 / 4 + 2 * c1 / 4 + 2 * c1 / 16) + frames * h * 4 * layers * ways)
    return params, per_record


BUILT_INS = {
    "crnn": ModelSpec(
        name="crnn", build=_build_crnn, reads=CRNN_READS, memory=_crnn_memory,
        about="the notebook's |STFT| -> log1p -> 2 conv blocks -> GRU -> dropout -> linear (ecg_ray.training.model)",
        label=lambda a: f"H={a['hidden_size']}",
    ),
}


# --- the registry -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _registry() -> dict[str, ModelSpec]:
    """The built-in models and every installed plug-in's, by name (loaded once per process)."""
    from importlib.metadata import entry_points

    models = dict(BUILT_INS)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        package = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plug-in must not take the built-in models with it
            raise EcgRayError(f"The model plug-in '{ep.name}' of the package {package} does not load ({ep.value}: "
                              f"{type(exc).__name__}: {exc}). Reinstall or uninstall {package}.") from exc
        if not isinstance(spec, ModelSpec):
            raise EcgRayError(f"The entry point '{ep.name}' = {ep.value} of the package {package} (group "
                              f"{ENTRY_POINT_GROUP}) is a {type(spec).__name__}, not an ecg_ray.models.ModelSpec.")
        if spec.name != ep.name:
            raise EcgRayError(f"The entry point '{ep.name}' of the package {package} declares a model named "
                              f"'{spec.name}': the two names must be the same.")
        if ep.name in models:
            raise EcgRayError(f"The package {package} registers a model '{ep.name}', a name {models[ep.name].package} "
                              "already has: uninstall one of them.")
        models[ep.name] = ModelSpec(**{**spec.__dict__, "package": package})
    return models


def list_models() -> list[str]:
    """The registered models' names, sorted."""
    return sorted(_registry())


def get_model(name: str) -> ModelSpec:
    """The ModelSpec registered as `name`; an unknown name lists the registered ones."""
    models = _registry()
    if name not in models:
        fail("model", KnownModel(), name)
    return models[name]


class KnownModel(Constraint):
    """search.model: a registered model's name (the list is read when a message needs it)."""

    def allows(self, value: Any) -> bool:
        return isinstance(value, str) and value in _registry()

    def __str__(self) -> str:
        return "a registered model, one of " + ", ".join(repr(n) for n in list_models()) + \
            " (a plug-in's model needs its package installed: `ecg-ray models` lists what is)"

    def invalid_value(self) -> Any:
        return "not-a-registered-model"


class ModelArgs(Constraint):
    """search.model_args: a mapping of the model's own hyperparameters (kept as canonical JSON)."""

    def allows(self, value: Any) -> bool:
        return isinstance(value, (str, dict))

    def __str__(self) -> str:
        return "a mapping of the model's own hyperparameters (`ecg-ray models` lists each model's)"

    def invalid_value(self) -> Any:
        return 3


def args_text(args: dict) -> str:
    """A model_args mapping as the one text every trial config, table and checkpoint holds: sorted JSON."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


def canonical_args(model: str, given: Any) -> str:
    """`given` (a mapping, or its JSON) checked against `model`'s hyperparameters, the defaults
    filled in, as JSON with sorted keys: the one form a trial config, a table and a checkpoint hold."""
    spec = get_model(model)
    raw = given
    if isinstance(given, str):
        try:
            raw = json.loads(given) if given.strip() else {}
        except ValueError:
            raw = None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        fail("model_args", ModelArgs(), given)
    declared = spec.hyperparameters
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        takes = ", ".join(declared) if declared else "none beyond the search keys it reads"
        raise ConfigError(f"The model '{model}' has no hyperparameter {', '.join(repr(k) for k in unknown)} "
                          f"(search.model_args). Its own: {takes}. To give each model of a grid its own, list them: "
                          "`search.configs: [{model: crnn}, {model: cnn1d, model_args: {...}}]`.")
    args = {}
    for key, hp in declared.items():
        value = raw.get(key, hp.default)
        if isinstance(value, str) and isinstance(hp.allowed, Interval) and hp.allowed.kind is float \
                and NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 as a string
        args[key] = validate(f"model_args.{key}", value, hp.allowed)
    return args_text(args)


def model_args(trial) -> dict:
    """Everything `build` needs for a trial (a TrialConfig, or its dict): the keys its model reads
    and its own hyperparameters: what a checkpoint's trial rebuilds the model from."""
    get = trial.get if isinstance(trial, dict) else lambda k, d=None: getattr(trial, k, d)
    spec = get_model(get("model", DEFAULT_MODEL) or DEFAULT_MODEL)
    own = json.loads(get("model_args", "") or "{}")
    return {k: get(k) for k in spec.reads} | own


def build_model(trial):
    """The model of a trial (a TrialConfig): the one place a model is built (training, predict,
    costs). Seed first for the trial's initial weights (ecg_ray.training.loop.build_trial does)."""
    return get_model(trial.model).build(model_args(trial))


def label(trial: dict) -> str:
    """The model's part of a progress line: `H=256` for crnn, else its name and hyperparameters."""
    spec = get_model(trial.get("model") or DEFAULT_MODEL)
    args = model_args(trial)
    if spec.label is not None:
        return spec.label(args)
    return " ".join([spec.name, *(f"{k}={args[k]}" for k in sorted(spec.hyperparameters))])


def memory(trial, samples: int) -> tuple[int, float]:
    """(parameters, activation bytes per record) of a trial's model, for GPU packing."""
    spec, args = get_model(trial.model), model_args(trial)
    if spec.memory is not None:
        return spec.memory(args, samples)
    import torch

    with torch.device("meta"):  # counted without allocating
        params = sum(p.numel() for p in spec.build(args).parameters())
    return params, 4.0 * samples * 64  # generous: 64 float32 activations per input sample


def package_of(name: str) -> str | None:
    """The package that registers `name`, or None where none installed does."""
    models = _registry()
    return models[name].package if name in models else None


def plugin_packages(names) -> list[str]:
    """The plug-in packages (not ecg_ray itself) the models `names` come from: what a cluster must install."""
    return sorted({get_model(n).package for n in names} - {BUILT_IN})


def needed_plugins(space) -> list[str]:
    """The plug-in packages an experiment's search space (a SearchSpace) trains models of."""
    return plugin_packages(space.values("model") or [DEFAULT_MODEL])


def plugins_note(packages: list[str]) -> str:
    """One line for `submit` and `k8s`: which plug-in packages every node of the cluster needs."""
    return (f"this experiment trains models of the plug-in package(s) {', '.join(packages)}: install them on every node "
            "of the cluster (cluster.yaml's setup_commands, or the image), or its trials cannot build their model")


def require(name: str, package: str | None, where: str) -> ModelSpec:
    """The spec of a model `where` (a file) was trained with, or one line naming the package to install."""
    if name in _registry():
        return _registry()[name]
    if package and package != BUILT_IN:
        raise EcgRayError(f"{where} holds a model '{name}' from the package {package}, which is not installed here: "
                          f"pip install {package} (installed models: {', '.join(list_models())}).")
    raise EcgRayError(f"{where} holds a model '{name}', which no installed package registers (installed models: "
                      f"{', '.join(list_models())}); install the plug-in package it was trained with.")


def describe() -> str:
    """`ecg-ray models`: each registered model, its package, what it reads and its own hyperparameters."""
    lines = []
    for name in list_models():
        spec = get_model(name)
        lines.append(f"{name}  ({spec.package}{', the default' if name == DEFAULT_MODEL else ''}): {spec.about}")
        if spec.reads:
            lines.append(f"    reads: {', '.join(spec.reads)}")
        for key, hp in spec.hyperparameters.items():
            lines.append(f"    model_args.{key} = {hp.default!r}: {hp.allowed}. {hp.help}".rstrip())
        if not spec.hyperparameters:
            lines.append("    model_args: none")
    return "\n".join(lines)

