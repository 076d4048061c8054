"""Conda environments for cluster users list the same packages as pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from conftest import REPO

CONDA_NAMES = {"pytorch": "torch", "matplotlib-base": "matplotlib"}  # conda-forge name → PyPI name


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_env_files_parse_and_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files
    for env_file in env_files:
        env = yaml.safe_load(env_file.read_text())
        assert "conda-forge" in env["channels"]
        names = set()
        for dep in env["dependencies"]:
            if isinstance(dep, dict):
                names |= {_name(d) for d in dep["pip"]}
            else:
                names.add(CONDA_NAMES.get(_name(dep), _name(dep)))
        names -= {"python", "pip"}
        assert names == wanted, f"{env_file.name}: extra {names - wanted}, missing {wanted - names}"


@pytest.mark.workflow
def test_conda_environment_installs_the_package_from_the_running_checkout():
    """--sdm conda: Snakemake runs envs/<name>.post-deploy.sh in each new environment; it installs the package
    (the one way the rules import it) from VECSET_SOURCE, which parsing the Snakefile sets."""
    import subprocess

    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        script = env_file.with_suffix(".post-deploy.sh")
        assert script.exists(), f"{script.name} missing: that environment would lack the vecset package"
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        assert 'pip install --no-deps --editable "${VECSET_SOURCE' in script.read_text()
    assert 'os.environ.setdefault("VECSET_SOURCE"' in (REPO / "rules/common.smk").read_text()
