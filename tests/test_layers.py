"""How the code is arranged: layers that point one way, one Snakemake adapter, one way to import the package,
short training functions, and a Snakefile that parses without the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "src" / "vecset"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(folder: str = "") -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): _imports(p) for p in sorted((PACKAGE / folder).rglob("*.py"))}


def _offenders(modules: dict[str, set[str]], prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    hits = {name: sorted(m for m in imported if m.startswith(prefixes)) for name, imported in modules.items()}
    return {name: found for name, found in hits.items() if found}


def test_only_the_adapter_knows_snakemake():
    modules = _modules()
    assert "snakemake_adapter.py" in _offenders(modules, ("snakemake",))
    assert set(_offenders(modules, ("snakemake",))) == {"snakemake_adapter.py"}


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("data", ("torch", "vecset.model", "vecset.train", "vecset.eval", "vecset.plan")),
        ("model", ("vecset.train", "vecset.eval")),
        ("eval", ("vecset.train",)),
        ("train", ("vecset.eval",)),
    ],
)
def test_layers_point_one_way(layer, forbidden):
    assert _offenders(_modules(layer), forbidden) == {}


def test_settings_and_their_checks_are_torch_and_numpy_free():
    light = {name: _modules()[name] for name in ("settings.py", "config.py", "preemption.py", "data/contract.py")}
    assert _offenders(light, ("torch", "numpy", "scipy", "skimage", "nibabel", "vecset.model", "vecset.train")) == {}


def test_no_function_in_the_package_is_longer_than_sixty_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length} lines)")
    assert long == []


def _edits_sys_path(path: Path) -> bool:
    """Whether a file calls sys.path.insert / append / extend."""
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("insert", "append", "extend")
        and ast.unparse(node.func.value) == "sys.path"
        for node in ast.walk(ast.parse(path.read_text()))
    )


def test_the_package_is_imported_one_way():
    """Installed (pip install -e .): no link into the package from the scripts, no sys.path edits anywhere."""
    files = [p for folder in ("src", "bench", "tests", "workflow") for p in (REPO / folder).rglob("*.py")]
    assert [str(p.relative_to(REPO)) for p in files if _edits_sys_path(p)] == []
    assert not any(p.is_symlink() for p in (REPO / "workflow").rglob("*"))


PARSE_ONLY = """
import sys
from snakemake.cli import main
try:
    main(sys.argv[1:])
except SystemExit as stop:
    assert not stop.code, stop.code
print("loaded:", sorted({m.split(".")[0] for m in sys.modules} & {"torch", "scipy", "skimage", "nibabel", "igl"}))
"""


@pytest.mark.workflow
def test_parsing_the_snakefile_imports_no_torch_scipy_or_scikit_image(tmp_path):
    config = (REPO / "config/config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(config)
    args = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", "config.yaml"]
    proc = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY, *args, "-n", "--quiet", "--config", "demo={n_cases: 3}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded: []" in proc.stdout, proc.stdout[-500:]


def test_the_readme_layout_names_every_package_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("## Read more")]
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"]
    assert [str(p.relative_to(PACKAGE)) for p in modules if f"`{p.name}`" not in layout] == []
