"""Reading experiment files: YAML -> a validated ExperimentConfig, with command-line overrides.

    python -c "from ecg_ray.config import load_experiment; print(load_experiment('experiments/quick.yaml'))"
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from ecg_ray.config.constraints import NUMBER, Interval, fail
from ecg_ray.config.experiment import ExperimentConfig
from ecg_ray.config.sections import DataConfig, ReportConfig, ResourcesConfig, SchedulerConfig, TrackingConfig, TrialConfig
from ecg_ray.errors import ConfigError

_SECTIONS = {"data": DataConfig, "scheduler": SchedulerConfig, "resources": ResourcesConfig, "tracking": TrackingConfig, "report": ReportConfig}


def _floats_from_strings(cls, raw: dict) -> dict:
    """`raw` with numeric strings turned into floats for the keys of `cls` that take a float."""
    def number(key, value):
        takes_float = isinstance(cls.CONSTRAINTS.get(key), Interval) and cls.CONSTRAINTS[key].kind is float
        if takes_float and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            return float(value)
        if takes_float and isinstance(value, list):
            return [number(key, v) for v in value]
        return value

    return {key: number(key, value) for key, value in raw.items()}


def _build(cls, raw: Any, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(prefix, "a mapping of keys to values", raw)
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"Unknown key '{prefix}.{key}'. Allowed keys in '{prefix}': {', '.join(sorted(known))}."
            )
    return cls(**_floats_from_strings(cls, raw))


def experiment_from_dict(raw: Any, origin: str = "<dict>") -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: an experiment file must be a YAML mapping, got {type(raw).__name__}.")
    top = {f.name for f in fields(ExperimentConfig)}
    for key in raw:
        if key not in top:
            raise ConfigError(f"{origin}: unknown key '{key}'. Allowed top-level keys: {', '.join(sorted(top))}.")
    values = dict(raw)
    try:
        for key, cls in _SECTIONS.items():
            values[key] = _build(cls, raw.get(key), key)
        search = raw.get("search") or {}
        if not isinstance(search, dict):
            fail("search", "a mapping of search keys to values or lists", search)
        values["search"] = _floats_from_strings(TrialConfig, search)
        return ExperimentConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err}") from None


# A YAML file may name a node again by an alias; a few aliases of aliases expand into gigabytes
# (a "billion laughs" file). An experiment file whose values expand past this many nodes, and past
# EXPANSION times the nodes it spells out, is refused before anything is built from it.
MAX_NODES, EXPANSION = 100_000, 20


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(
                    f"the key '{key}' is given twice in one mapping (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one."
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _expanded_size(node, limit: int) -> int:
    """How many nodes `node` stands for once its aliases are expanded, counted up to `limit`."""
    count, stack = 0, [node]
    while stack and count <= limit:
        current = stack.pop()
        count += 1
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            stack.extend(v for pair in current.value for v in pair)
    return count


def _read_yaml(path: Path, text: str):
    """The parsed file, with duplicate keys and alias bombs refused, naming the file."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()  # parsed once: checked as nodes, then built from the same nodes
        if root is not None:
            spelled = text.count("\n") + 1 + len(text) // 8  # a generous bound on the nodes the text itself holds
            size = _expanded_size(root, max(MAX_NODES, EXPANSION * spelled))
            if size > max(MAX_NODES, EXPANSION * spelled):
                raise ConfigError(
                    f"its aliases expand to more than {max(MAX_NODES, EXPANSION * spelled):,} values from "
                    f"{len(text):,} bytes; write the values out instead of nesting aliases."
                )
        return loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)}). Fix that line.") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    finally:
        loader.dispose()


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line: what it expected, and where (line and column, from 1)."""
    mark = getattr(err, "problem_mark", None)
    what = " ".join(str(getattr(err, "problem", None) or err).split())
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + what + (f", {' '.join(str(context).split())}" if context else "")


def load_experiment(path: str | os.PathLike | None, **overrides) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Args:
        path: the YAML file; None for the defaults.
        overrides: dotted keys to replace after reading, e.g. {"data.source": "pickle"}.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ConfigError(f"Experiment file {path} {what}. Pass a YAML file such as experiments/quick.yaml.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path} is not a text file (byte {err.start} is not UTF-8): an experiment file is YAML "
                              "text, such as experiments/quick.yaml.") from None
        except OSError as err:
            raise ConfigError(f"Experiment file {path} cannot be read ({err.strerror or err}).") from None
        raw = _read_yaml(path, text)
        if raw is None or raw == {}:
            raise ConfigError(
                f"{path} is empty. An experiment file needs at least a `search:` section; "
                "copy experiments/quick.yaml and edit it."
            )
    if overrides and not isinstance(raw, dict):
        return experiment_from_dict(raw, origin=str(path))  # refused there: the file is not a mapping
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # `data: 3` and --data: refused by the section's own check
                return experiment_from_dict(raw, origin=str(path) if path is not None else "defaults")
        node[leaf] = value
    return experiment_from_dict(raw, origin=str(path) if path is not None else "defaults")


def with_data(cfg: ExperimentConfig, **changes) -> ExperimentConfig:
    """A copy of `cfg` with DataConfig fields replaced (validated again)."""
    return replace(cfg, data=replace(cfg.data, **changes))
