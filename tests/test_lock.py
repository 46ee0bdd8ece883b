"""The three install files agree: pyproject.toml (the source of truth), requirements/lock.txt
(the exact versions `make setup` installs; `make lock` rewrites it) and environment.yml."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
yaml = pytest.importorskip("yaml")  # PyYAML, which the Jupyter server brings

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"


def _declared() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"the lock pins with == only: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_declared_dependency_within_its_range():
    pins = _locked()
    for spec in map(Requirement, _declared()):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is declared in pyproject.toml but not in the lock: run `make lock`"
        assert spec.specifier.contains(pins[name], prereleases=True), (
            f"the lock's {spec.name}=={pins[name]} is outside pyproject.toml's {spec}: run `make lock`")


def test_the_lock_has_public_versions_and_not_the_project():
    pins = _locked()
    assert "mielib" not in pins
    # No local tags (2.13.0+cpu): a CUDA box must get PyPI's CUDA build of the same torch.
    assert not [f"{n}=={v}" for n, v in pins.items() if Version(v).local], "local version tags in the lock"
    assert pins["torch"] == "2.13.0"


def test_environment_yml_installs_pyproject_dependencies_with_the_lock():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert f"-c {LOCK.relative_to(REPO).as_posix()}" in pip
    listed = [line for line in pip if not line.startswith("-")]
    assert sorted(listed) == sorted(_declared()), "environment.yml's pip list differs from pyproject.toml"
