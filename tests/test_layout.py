"""The package layout's contracts: where Ray enters, where Ray's internals are used, no import circles.

Read from the source (every import statement, function-local ones included), so a module that
imports Ray only inside a function is caught as surely as one that imports it at the top.
"""

import ast
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ecg_ray"
RAY_PACKAGE = "ecg_ray.tuning"  # the only package that imports ray
INTERNALS = "ecg_ray.tuning._ray_internals"  # the only module that touches Ray's private names
PRIVATE_PARTS = ("_internal", "_private", "_raylet", "internal_kv")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[str]:
    """Every module an import statement in `path` names, function-local ones included, and every module
    `importlib.import_module("...")` names by a literal (an edge an import statement does not show)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.append(node.args[0].value)
        elif isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES]
            # `from package import module` imports the module (its package is every submodule's parent
            # anyway); `from module import name` imports the module.
            out += submodules if submodules and len(submodules) == len(node.names) else [node.module, *submodules]
    return out


def internal_edges(name: str) -> set[str]:
    """The ecg_ray modules `name` imports (a package import counts as importing its __init__)."""
    return {target for target in imports(MODULES[name]) if target in MODULES and target != name}


def test_only_the_ray_package_imports_ray():
    outside = {name: sorted({t for t in imports(path) if t == "ray" or t.startswith("ray.")})
               for name, path in MODULES.items() if not name.startswith(RAY_PACKAGE)}
    assert {name: found for name, found in outside.items() if found} == {}


def private_uses(path: Path) -> list[str]:
    """Ray's private names `path` uses: imports of private modules, attribute chains such as
    `ray._private.state`, the GCS key-value store's `_internal_kv_*` functions, and ray.init's private
    keywords (`_system_config`)."""
    found = {t for t in imports(path) if t.startswith("ray") and any(p in t for p in PRIVATE_PARTS)}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ray" \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.add(f"ray.{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_internal_kv_"):
            found.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "init" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "ray":
            found |= {f"ray.init({k.arg}=)" for k in node.keywords if k.arg and k.arg.startswith("_")}
    return sorted(found)


def test_only_one_module_uses_rays_private_names():
    users = {name: private_uses(path) for name, path in MODULES.items()}
    assert {name: used for name, used in users.items() if used and name != INTERNALS} == {}
    assert users[INTERNALS], "the check finds nothing even where the private names are"


# Ray's environment variables that its documentation tells users to set, though Ray reads them in
# private modules only: usage statistics (docs.ray.io, "Usage Stats Collection").
DOCUMENTED_ENV = {"RAY_USAGE_STATS_ENABLED"}


def _private_ray_literals() -> set[str]:
    """The string literals Ray's source holds only in private modules (a path part starting with _)."""
    import re

    import ray

    root = Path(ray.__file__).parent
    where: dict[str, set[bool]] = {}
    for f in root.rglob("*.py"):
        parts = f.relative_to(root.parent).parts
        private = any(p.startswith("_") and not p.startswith("__") for p in parts)
        for literal in set(re.findall(r"""["']([A-Za-z_][A-Za-z0-9_]+)["']""", f.read_text(errors="ignore"))):
            where.setdefault(literal, set()).add(private)
    return {literal for literal, kinds in where.items() if kinds == {True}}


def test_rays_private_settings_are_only_in_the_internals_module():
    """Ray's private knobs by name (environment variables Ray defines only in its private modules, such
    as Train's RAY_TRAIN_HEALTH_CHECK_INTERVAL_S) and its internal actors (ray.get_actor of a name only
    Ray's internals use) live in the internals module too, where they are used only on a tested Ray."""
    private = _private_ray_literals()
    found = {}
    for name, path in MODULES.items():
        if name == INTERNALS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            env = isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(("RAY_", "TUNE_"))
            actor = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_actor"
                     and node.args and isinstance(node.args[0], ast.Constant))
            literal = node.value if env else node.args[0].value if actor else None
            if literal in private and literal not in DOCUMENTED_ENV:
                found.setdefault(name, []).append(literal)
    assert found == {}
    internals = ast.parse(MODULES[INTERNALS].read_text())
    assert {n.value for n in ast.walk(internals) if isinstance(n, ast.Constant) and isinstance(n.value, str)} & private, \
        "the check finds nothing even where the private settings are"


GATE = "ecg_ray.tuning.fast_path"  # the one module that reaches the internals, with what holds without them


def test_only_the_gate_reaches_the_internals():
    """Every use of Ray's private names goes through ecg_ray.tuning.fast_path, which gives each one's
    fallback on an untested Ray: no other module imports the internals module or names it in code."""
    short = INTERNALS.rsplit(".", 1)[1]
    users = set()
    for name, path in MODULES.items():
        if name in (INTERNALS, GATE):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            named = (isinstance(node, ast.Name) and node.id == short) or (isinstance(node, ast.Attribute) and node.attr == short)
            imported = isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                short in n for n in [alias.name for alias in node.names] + [getattr(node, "module", None) or ""])
            literal = isinstance(node, ast.Constant) and node.value == INTERNALS
            if named or imported or literal:
                users.add(name)
    assert users == set()
    assert INTERNALS in MODULES[GATE].read_text(), "the check finds nothing even where the internals are reached"


def test_no_module_imports_the_internals_at_its_top():
    """The fast path's module is imported only where it runs (inside a function), so a Ray release
    that moved one of its names breaks the fast path alone, never `ecg-ray tune` as a whole."""
    for name, path in MODULES.items():
        top = [node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
        named = [alias.name for node in top for alias in node.names] + [node.module or "" for node in top if isinstance(node, ast.ImportFrom)]
        assert not any(INTERNALS.rsplit(".", 1)[1] in n for n in named), name


def test_no_import_circles():
    graph = {name: internal_edges(name) for name in MODULES}
    # A package's __init__ that re-exports its modules imports them; its modules importing each other
    # through the package name would be a circle, which is what this finds.
    circles = []

    def visit(node, stack, seen):
        for nxt in graph[node]:
            if nxt in stack:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in graph:
        visit(start, [start], {start})
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles[:5])


@pytest.mark.parametrize("package", ["config", "data", "training", "results", "commands"])
def test_the_stages_run_without_ray(package):
    """No module outside ecg_ray.tuning needs Ray even indirectly at import: importing each stage's
    modules in a fresh interpreter leaves `ray` unimported."""
    import subprocess
    import sys

    names = [n for n in MODULES if n.startswith(f"ecg_ray.{package}")]
    code = "import sys\n" + "".join(f"import {n}\n" for n in names) + "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"{package}: {out}"


EDGES = ("mlflow", "optuna_dashboard")  # the integrations: imported only where a user asks for them


def test_the_integrations_are_edges_nothing_imports_unasked(tmp_path):
    """Importing every module (Ray included) and a whole `ecg-ray report` of a folder leave mlflow and
    optuna-dashboard unimported: they load only for --mlflow / tracking.mlflow_uri (and never optuna-dashboard)."""
    import subprocess
    import sys

    from helpers import fake_trial

    exp = tmp_path / "exp"
    fake_trial(exp, "t0000", 0.001, [0.2, 0.5])
    (exp / "ecg_ray_experiment.json").write_text('{"config": {"name": "e", "search": {"lr": [0.001]}}}')
    code = ("import sys\n" + "".join(f"import {n}\n" for n in MODULES if "_ray_internals" not in n and not n.endswith("__main__"))
            + f"from ecg_ray.commands.main import main\nassert main(['report', {str(exp)!r}]) == 0\n"
            + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {EDGES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_git_ignores_no_source_file():
    """A clean clone has every module: a .gitignore rule (such as `data/`, meant for a top-level data
    folder) that also matches `ecg_ray/data/trust.py` would leave it out of every commit and fail the
    clone's first import, while this checkout, which has the file, passes."""
    root = PACKAGE.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    sources = [str(p.relative_to(root)) for folder in ("ecg_ray", "tests", "benchmarks", "experiments", ".ci")
               for p in sorted((root / folder).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=root, input="\n".join(sources),
                             capture_output=True, text=True).stdout.split()
    assert ignored == []


def test_the_circle_check_sees_importlib_edges():
    """The fast path reaches the internals by importlib; that edge is in the graph the circle check walks."""
    assert "ecg_ray.tuning._ray_internals" in internal_edges("ecg_ray.tuning.fast_path")


def test_every_package_has_an_init_whose_docstring_says_its_job():
    packages = sorted(p.parent for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE and "__pycache__" not in p.parts)
    missing = [str(d.relative_to(PACKAGE)) for d in set(packages) if not (d / "__init__.py").is_file()]
    assert missing == [], f"implicit namespace packages: {missing}"
    for d in set(packages):
        doc = ast.get_docstring(ast.parse((d / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 8, f"{d.relative_to(PACKAGE)}/__init__.py says nothing of its job"
