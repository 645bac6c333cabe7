"""Mutation testing (``make mutation``): mutmut over the modules whose arithmetic users depend on.

Each group (a few modules and the tests that target them) runs in its own copy of the tree
under ``build/mutation/<group>/`` with its own ``[tool.mutmut]`` section, so the shared
working tree is never mutated and each module runs against its targeted tests only. Results:
``build/mutation/summary.json`` and a table on stdout (killed, survived, no tests, timeout,
score = killed / (killed + survived)); surviving mutants are listed by name, and
``mutmut show NAME`` inside the group's directory prints one.

    python scripts/mutation.py                 # every group
    python scripts/mutation.py chat_format     # some groups
    python scripts/mutation.py --list

mutmut attributes tests to functions by recording calls in the pytest process; code that the
tests run only in spawned worker processes (the model, the loop) shows up as "no tests".
Those modules are covered by the hand-planted mutants listed in TESTING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"

# group -> (modules to mutate, tests that target them). Later losses (DPO, GRPO) join here.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "objectives": (["nemo_exaone/training/objectives.py", "nemo_exaone/training/vocab_parallel.py"],
                   # in-process tests only (the TP=2 one runs in spawned processes)
                   [f"tests/test_training_distill_losses.py::{name}" for name in (
                       "test_cross_entropy_matches_hand_computation",
                       "test_kl_matches_hand_computation_at_temperature",
                       "test_kd_and_afm_losses_match_hand_computation",
                       "test_gradients_match_autograd_reference")]
                   + ["tests/test_distill_loss_parts.py"]),
    "chat_format": (["nemo_exaone/data/chat_format.py"],
                    ["tests/test_data_chat_format.py", "tests/test_chat_format_prompt.py",
                     "tests/test_exaone4_chat.py"]),
    "mapping": (["nemo_exaone/checkpoint/mapping.py", "nemo_exaone/checkpoint/exaone_hf.py"],
                ["tests/test_checkpoint_mapping.py"]),
    "presets": (["nemo_exaone/config/presets.py"],
                ["tests/test_presets.py", "tests/test_preset_identity.py"]),
    "decontamination": (["nemo_exaone/data/decontamination.py",
                         "nemo_exaone/data/window_hash.py"],
                        ["tests/test_data_decontamination.py",
                         "tests/test_decontamination_defaults.py"]),
    # The DPO family, SimPO and Bradley-Terry (issue 9): pure functions, closed-form tests.
    "preference_losses": (["nemo_exaone/alignment/losses.py"],
                          ["tests/test_alignment_losses.py"]),
}
STATUS = ("killed", "survived", "no tests", "timeout", "suspicious", "skipped",
          "caught by type check", "not checked", "segfault")


def _copy_tree(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("nemo_exaone", "tests", "examples"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)


def _pyproject(modules: list[str], tests: list[str]) -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text)
    return text + (
        "\n[tool.mutmut]\n"
        'source_paths = ["nemo_exaone"]\n'
        f"only_mutate = {json.dumps(modules)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
        "use_git_change_detection = false\n"
        # torch is not fork-safe: fork the workers from a clean server process
        'process_isolation = "forkserver"\n')


def run_group(name: str, max_children: int, timeout: int) -> dict:
    modules, tests = GROUPS[name]
    group_dir = WORK / name
    _copy_tree(group_dir)
    (group_dir / "pyproject.toml").write_text(_pyproject(modules, tests), encoding="utf-8")
    mutmut = Path(sys.executable).with_name("mutmut")
    # Subprocesses the tests start import the package from the mutated copy, not from the
    # editable install. The directory must exist before Python starts: an entry that is
    # missing at start-up is cached as "no importer" and later skipped.
    (group_dir / "mutants").mkdir()
    env = {**os.environ, "PYTHONPATH": str(group_dir / "mutants"), "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    log = group_dir / "mutmut.log"
    with open(log, "w") as handle:
        try:
            code = subprocess.run([str(mutmut), "run", "--max-children", str(max_children)],
                                  cwd=group_dir, env=env, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    results = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=group_dir, env=env,
                             capture_output=True, text=True).stdout
    counts = {s: 0 for s in STATUS}
    survivors = []
    for line in results.splitlines():
        key, _, status = line.strip().rpartition(": ")
        if status in counts:
            counts[status] += 1
            if status == "survived":
                survivors.append(key)
    decided = counts["killed"] + counts["survived"]
    return {"group": name, "modules": modules, "tests": tests, "exit": code,
            "seconds": round(time.monotonic() - started), "counts": counts,
            "score": round(counts["killed"] / decided, 4) if decided else None,
            "survivors": survivors, "log": str(log)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"default: all ({', '.join(GROUPS)})")
    parser.add_argument("--list", action="store_true", help="print the groups and exit")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds per group (default 600: five groups in under an hour)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (modules, tests) in GROUPS.items():
            print(f"{name}: {' '.join(modules)}  <-  {' '.join(tests)}")
        return 0
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    WORK.mkdir(parents=True, exist_ok=True)
    summary_path = WORK / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name in args.groups or list(GROUPS):
        print(f"== {name}: mutating {', '.join(GROUPS[name][0])}", flush=True)
        result = run_group(name, args.max_children, args.timeout)
        summary[name] = result
        summary_path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        c = result["counts"]
        print(f"   killed {c['killed']}, survived {c['survived']}, no tests {c['no tests']}, "
              f"timeout {c['timeout']}; score {result['score']}; {result['seconds']} s "
              f"(exit {result['exit']}, log {result['log']})", flush=True)
        for key in result["survivors"]:
            print(f"   survived: {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
