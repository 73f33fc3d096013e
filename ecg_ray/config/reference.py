"""The configuration reference (docs/configuration.md), generated from the declared constraints.

    python -m ecg_ray.config.reference > docs/configuration.md

Every key of every section, with its default, what it allows (the constraint the validator checks)
and the comment written beside it in the source. tests/test_docs.py fails when the file in docs/
is not what this prints, so the reference never drifts from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys

from ecg_ray.config.experiment import ExperimentConfig
from ecg_ray.config.sections import DataConfig, ReportConfig, ResourcesConfig, SchedulerConfig, TrackingConfig, TrialConfig

SECTIONS = [
    (ExperimentConfig, "", "The top level of an experiment file."),
    (DataConfig, "data", "Where the records come from and how they are prepared."),
    (TrialConfig, "search", "One trial's knobs. Each is a fixed value, a list (a grid axis) or a distribution "
                            "(`{loguniform: [lo, hi]}`, ...) under `search:`; `search.algorithm`, `search.num_samples`, "
                            "`search.suggest_batch` and `search.configs` choose how the space is searched "
                            "(docs/guide.md, Experiment files)."),
    (SchedulerConfig, "scheduler", "Early stopping of weak trials."),
    (ResourcesConfig, "resources", "What each trial holds and how it runs on Ray."),
    (TrackingConfig, "tracking", "Experiment tracking besides the folder (MLflow)."),
    (ReportConfig, "report", "What `ecg-ray tune` measures for the report after its trials (costs)."),
]
SECTION_FIELDS = {"data", "scheduler", "resources", "search", "tracking", "report"}  # ExperimentConfig fields that are sections


def field_comments(cls) -> dict[str, str]:
    """The comment of each field in `cls`'s source: on its line, or on the comment lines just above it."""
    lines, _ = inspect.getsourcelines(cls)
    comments, above = {}, []
    names = {f.name for f in dataclasses.fields(cls)}
    for line in lines:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# ").strip())
            continue
        name = text.split(":", 1)[0].strip()
        if name in names and ":" in text:
            same = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            comments[name] = " ".join([*above, same]).strip()
        above = []
    return comments


def _value(value) -> str:
    if isinstance(value, str):
        return f"`{value!r}`" if value else "`''`"
    return f"`{value!r}`".replace("None", "null").replace("True", "true").replace("False", "false")


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def render() -> str:
    """The reference as Markdown."""
    out = ["# Configuration reference", "",
           "Generated from the code by `python -m ecg_ray.config.reference > docs/configuration.md`; "
           "a test fails when this file is stale. Every key is checked when the file is read: an unknown key, "
           "a wrong type or an out-of-range value is an error that names the key, the value and what is allowed.", ""]
    for cls, section, about in SECTIONS:
        title = f"`{section}:`" if section else "Top level"
        out += [f"## {title}", "", about, "", "| key | default | allowed | what it does |", "|---|---|---|---|"]
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            if not section and f.name in SECTION_FIELDS:
                continue
            constraint = cls.CONSTRAINTS.get(f.name)
            allowed = str(constraint) if constraint is not None else "any"
            key = f"{section}.{f.name}" if section else f.name
            what = comments.get(f.name, "").replace("|", "\\|")
            out.append(f"| `{key}` | {_value(_default(f))} | {allowed.replace('|', chr(92) + '|')} | {what} |")
        out.append("")
    out += _models()
    return "\n".join(out)


def _models() -> list[str]:
    """The built-in models (plug-ins list theirs with `ecg-ray models`, as this file must not depend on
    what is installed)."""
    from ecg_ray.config.models import BUILT_INS, DEFAULT_MODEL

    out = ["## Models (`search.model`, `search.model_args`)", "",
           "The built-in models; `ecg-ray models` lists every installed one, plug-ins (docs/plugins.md) included, "
           "with its hyperparameters.", "", "| model | reads | `model_args` | what it is |", "|---|---|---|---|"]
    for name, spec in sorted(BUILT_INS.items()):
        args = ", ".join(f"`{k}` ({hp.default!r}; {hp.allowed})" for k, hp in spec.hyperparameters.items()) or "none"
        default = " (the default)" if name == DEFAULT_MODEL else ""
        out.append(f"| `{name}`{default} | {', '.join(f'`{k}`' for k in spec.reads)} | {args} | {spec.about.replace('|', chr(92) + '|')} |")
    return out + [""]


if __name__ == "__main__":
    sys.stdout.write(render())
