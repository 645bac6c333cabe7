"""Offline install of the GPU check's wheels (.whl/, made by scripts/gpu_wheels.sh) into a
target directory, for a machine with Python 3.12 and CUDA torch but no network.

Standard library only (``packaging`` is read from its wheel in .whl/). pip's resolver cannot
help here: with ``--target`` it ignores what the machine has and would want torch, so the
choice is made here: this project, megatron-core and Hydra/OmegaConf/antlr are always
installed at the pinned versions; every other wheel only when the machine lacks the package
or has a version that fails a requirement of the wheels being installed (the machine's own
torch, numpy, tokenizers... are kept). Then every requirement is checked against what is
importable with the target first on the path, and the modules are imported.

    python scripts/gpu_install.py --wheels .whl --target /tmp/site [--no-torch-ok]
    python scripts/gpu_install.py --source-hash    # what gpu_wheels.sh records in .whl/

The project's wheel must have been built from the source tree beside it (the scripts that
drive the check come from the tree, the package from the wheel): a hash of the package
sources recorded by gpu_wheels.sh is compared, and a stale .whl/ is refused.

``--no-torch-ok`` (rehearsal in a clean Python without torch): torch and numpy may be missing,
as may the imports that need them; anything else missing still fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ALWAYS = {"nemo-exaone", "megatron-core", "hydra-core", "omegaconf", "antlr4-python3-runtime"}
# Never shipped: a CUDA torch image brings them (huggingface-hub: tokenizers declares it,
# nothing in the check calls it).
MACHINE_PROVIDED = {"torch", "numpy", "huggingface-hub"}
IMPORTS = ["yaml", "omegaconf", "hydra", "safetensors", "tokenizers", "xxhash", "psutil", "tqdm",
           "packaging", "pytest", "nemo_exaone", "nemo_exaone.conf", "numpy", "torch",
           "megatron.core", "nemo_exaone.model.builder", "nemo_exaone.training.loop"]


SOURCE_HASH_FILE = "nemo_exaone.source-sha256"


def source_hash(root: Path) -> str:
    """sha256 over pyproject.toml and every package file (caches excluded), path-sorted."""
    digest = hashlib.sha256()
    files = [root / "pyproject.toml"] + sorted(
        f for f in (root / "nemo_exaone").rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> tuple[str, str]:
    dist, version = path.name.split("-")[:2]
    return canonical(dist), version


def wheel_requirements(path: Path) -> list[str]:
    """Requires-Dist lines of a wheel (its METADATA, read from the zip)."""
    with zipfile.ZipFile(path) as zf:
        [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        text = zf.read(meta).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:")]


def _active(requirement) -> bool:  # noqa: ANN001 - packaging.requirements.Requirement
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def plan(wheels: list[Path], installed: dict[str, str | None]) -> tuple[list[Path], list[str]]:
    """Which wheels to install, and a line about each decision."""
    from packaging.requirements import Requirement

    needs: dict[str, list] = {}
    for wheel in wheels:
        for line in wheel_requirements(wheel):
            req = Requirement(line)
            if _active(req):
                needs.setdefault(canonical(req.name), []).append(req)
    chosen, notes = [], []
    for wheel in wheels:
        name, version = wheel_name(wheel)
        have = installed[name]
        failing = [str(r) for r in needs.get(name, []) if have and not r.specifier.contains(
            have, prereleases=True)]
        if name in ALWAYS or have is None or failing:
            chosen.append(wheel)
            why = ("pinned" if name in ALWAYS else "absent here" if have is None
                   else f"machine's {have} fails {', '.join(failing)}")
            notes.append(f"install {name}=={version} ({why})")
        else:
            notes.append(f"keep    {name}=={have} (machine's; shipped {version} not needed)")
    return chosen, notes


_VERIFY = r"""
import importlib, json, sys
from importlib import metadata
sys.path.append(sys.argv[1])  # packaging from its wheel only if nothing else has it
from packaging.requirements import Requirement
wheels = json.loads(sys.argv[2])
problems, imports = [], {}
for dist, requirements in wheels.items():
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append([req.name, f"{dist} needs {req}; not installed"])
            continue
        if not req.specifier.contains(have, prereleases=True):
            problems.append([req.name, f"{dist} needs {req}; found {have}"])
for module in json.loads(sys.argv[3]):
    try:
        mod = importlib.import_module(module)
        imports[module] = "ok " + str(getattr(mod, "__file__", ""))
    except Exception as exc:
        imports[module] = f"error {type(exc).__name__}: {exc}"
print(json.dumps({"problems": problems, "imports": imports}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path)
    parser.add_argument("--target", type=Path)
    parser.add_argument("--no-torch-ok", action="store_true")
    parser.add_argument("--source-hash", action="store_true",
                        help="print the hash of the package sources and exit")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    if args.source_hash:
        print(source_hash(root))
        return 0
    if args.wheels is None or args.target is None:
        parser.error("--wheels and --target are required")
    recorded = args.wheels / SOURCE_HASH_FILE
    if not recorded.exists() or recorded.read_text().strip() != source_hash(root):
        print(f"gpu_install: {args.wheels} was not built from this source tree ("
              f"{recorded.name} {'differs' if recorded.exists() else 'is missing'}); run "
              "scripts/gpu_wheels.sh again", file=sys.stderr)
        return 1
    args.target = args.target.resolve()
    wheels = sorted(args.wheels.resolve().glob("*.whl"))
    names = [wheel_name(w)[0] for w in wheels]
    if not wheels or "nemo-exaone" not in names or "megatron-core" not in names:
        print(f"gpu_install: {args.wheels} lacks the wheel set (found {names}); run "
              "scripts/gpu_wheels.sh on a machine with network first", file=sys.stderr)
        return 1
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        print(f"gpu_install: several versions of {dupes} in {args.wheels}", file=sys.stderr)
        return 1
    installed = {}  # read before packaging's wheel joins sys.path (it would count as installed)
    for name in names:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed[name] = None
    [packaging_wheel] = [w.resolve() for w in wheels if wheel_name(w)[0] == "packaging"]
    sys.path.insert(0, str(packaging_wheel))
    chosen, notes = plan(wheels, installed)
    print("\n".join(notes))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--upgrade", "--disable-pip-version-check",
                    "--target", str(args.target), *map(str, chosen)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(args.target), *filter(None, [os.environ.get("PYTHONPATH")])])}
    requirements = {wheel_name(w)[0]: wheel_requirements(w) for w in wheels}
    out = subprocess.run([sys.executable, "-c", _VERIFY, str(packaging_wheel),
                          json.dumps(requirements), json.dumps(IMPORTS)],
                         env=env, cwd=args.target, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"gpu_install: the check of the install failed:\n{out.stderr}", file=sys.stderr)
        return 1
    report = json.loads(out.stdout.strip().splitlines()[-1])
    tolerated = MACHINE_PROVIDED if args.no_torch_ok else set()
    failed = False
    for name, problem in report["problems"]:
        expected = canonical(name) in tolerated
        failed |= not expected
        print(f"{'expected' if expected else 'MISSING '}: {problem}")
    for module, status in report["imports"].items():
        ok = status.startswith("ok")
        expected = not ok and args.no_torch_ok and re.search(
            r"No module named '(torch|numpy)'", status) is not None
        failed |= not ok and not expected
        print(f"import {module:28s} {status if ok else status[:160]}"
              f"{'  (expected without torch)' if expected else ''}")
    where = report["imports"].get("nemo_exaone", "")
    if where.startswith("ok") and str(args.target.resolve()) not in where:
        print(f"gpu_install: nemo_exaone imports from {where[3:]}, not {args.target}",
              file=sys.stderr)
        failed = True
    print(f"gpu_install: {'FAILED' if failed else 'ok'}: {len(chosen)} of {len(wheels)} wheels "
          f"installed into {args.target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
