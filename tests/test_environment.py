"""environment.yml (conda) and pyproject.toml (pip) must ask for the same packages."""
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (the dev extra installs it there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _conda_packages():
    deps, in_deps = [], False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        m = re.match(r"^  - ([A-Za-z0-9_.\-]+[^:]*)$", line)
        if in_deps and m:
            deps.append(m.group(1))
    return {CONDA_TO_PYPI.get(_name(d), _name(d)): d for d in deps if _name(d) not in {"python", "pip"}}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip_deps = project["dependencies"] + extras["notebooks"] + extras["dev"]
    pip_names = {_name(d) for d in pip_deps}
    conda = _conda_packages()
    assert set(conda) == pip_names, (
        f"only in environment.yml: {sorted(set(conda) - pip_names)}; only in pyproject: {sorted(pip_names - set(conda))}")
    # lower bounds agree too
    bounds = {_name(d): re.search(r">=\s*([\d.]+)", d) for d in pip_deps}
    for name, spec in conda.items():
        pip_bound = bounds[name].group(1) if bounds[name] else None
        conda_bound = re.search(r">=\s*([\d.]+)", spec)
        assert (conda_bound.group(1) if conda_bound else None) == pip_bound, name


def test_environment_yml_installs_adlkit_with_pip_and_has_no_build_strings():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+- -e \.\[dev", text, re.MULTILINE)
    assert "cudatoolkit" not in text
    assert not re.search(r"=\S+=\S+", text), "no build strings"
    assert "conda-forge" in text
