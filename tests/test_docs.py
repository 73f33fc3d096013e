"""The documentation stays true to the code: the generated configuration reference is current, the
README's experiment file is the shipped one, and every file the README links to exists."""

import re
from pathlib import Path

from ecg_ray.config import reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_configuration_reference_is_current():
    """Regenerate with: python -m ecg_ray.config.reference > docs/configuration.md"""
    assert (ROOT / "docs" / "configuration.md").read_text() == reference.render()


def test_the_reference_names_every_key_with_what_it_allows():
    text = reference.render()
    for cls, section, _ in reference.SECTIONS:
        for name, constraint in cls.CONSTRAINTS.items():
            key = f"{section}.{name}" if section else name
            assert f"| `{key}` |" in text and str(constraint) in text, key


def test_the_readme_is_read_in_ten_minutes():
    assert len(README.splitlines()) <= 250


def test_the_readmes_experiment_file_is_the_shipped_one():
    (block,) = re.findall(r"```yaml\n(.*?)```", README, re.S)
    assert block == (ROOT / "experiments" / "quick.yaml").read_text()


def test_every_file_the_readme_links_to_exists():
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)#][^)]*)\)", README) if "://" not in t}
    assert targets and all((ROOT / t).is_file() for t in targets), sorted(t for t in targets if not (ROOT / t).is_file())
