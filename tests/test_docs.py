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


def test_every_file_that_names_a_ray_release_names_the_tested_one():
    """The tested Ray release is written once (ecg_ray/releases.py); the cluster files' pins, the manifest's
    images and rayVersion, and the README's and docs' mentions all name it."""
    import re
    import subprocess

    from ecg_ray.releases import RAY_RELEASE, TESTED_RAY

    patterns = [r"ray(?:\[[a-z,]+\])?==(\d+\.\d+\.\d+)", r"rayproject/ray:(\d+\.\d+\.\d+)", r"rayVersion: ['\"]?(\d+\.\d+\.\d+)",
                r"\bRay(?:'s)? (\d+\.\d+\.\d+)\b", r"release (\d+\.\d+\.\d+)"]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = [f for f in tracked if f.endswith((".yaml", ".yml", ".md", ".sh")) or f.startswith(".ci/")]
    found = {}
    for rel in files:
        text = (ROOT / rel).read_text(errors="replace")
        for pattern in patterns:
            for release in re.findall(pattern, text):
                found.setdefault(release, set()).add(rel)
    assert {"cluster.yaml", "cluster-onprem.yaml", "k8s/rayjob.yaml", "README.md"} <= found.get(RAY_RELEASE, set())
    assert set(found) == {RAY_RELEASE}, {r: sorted(f) for r, f in found.items() if r != RAY_RELEASE}
    assert RAY_RELEASE == TESTED_RAY[-1]
    others = [rel for rel in tracked if rel.endswith(".py") and rel != "ecg_ray/releases.py"
              and RAY_RELEASE in (ROOT / rel).read_text() and not rel.startswith("tests/")]
    assert others == [], f"the release is written in code outside ecg_ray/releases.py: {others}"
