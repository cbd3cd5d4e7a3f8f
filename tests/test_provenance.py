"""run.json's git_commit is the commit of the meap-bench source that ran, or null: never the commit of some
other repository that merely contains a copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = "import json, meap_bench.provenance as p; print(json.dumps([p.__file__, p.source_commit()]))"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def new_repo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    git(folder, "init", "-q")
    (folder / "notes.txt").write_text("another project\n")
    git(folder, "add", "notes.txt")
    git(folder, "commit", "-q", "-m", "other")
    return folder


def copy_package(root: Path) -> Path:
    shutil.copytree(REPO / "meap_bench", root / "meap_bench", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def provenance(root: Path, given: str | None = None) -> dict:
    """source_commit() as seen by a Python that imports the package copy under `root` (with
    MEAP_BENCH_GIT_COMMIT set to `given`, else unset)."""
    env = {k: v for k, v in os.environ.items() if k != "MEAP_BENCH_GIT_COMMIT"}
    if given is not None:
        env["MEAP_BENCH_GIT_COMMIT"] = given
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True, env=env)
    where, found = json.loads(out.stdout)
    assert Path(where).resolve().is_relative_to(root.resolve())  # the copy ran, not the installed package
    return found


def test_copy_inside_another_repository_records_null_commit(tmp_path, checkpoints_yaml):
    root = copy_package(new_repo(tmp_path / "other"))
    shutil.copytree(REPO / "tasks", root / "tasks")
    out = tmp_path / "reports"
    subprocess.run([sys.executable, "-m", "meap_bench", "run", "--tasks", "needle", "--checkpoints",
                    str(checkpoints_yaml), "--only", "tiny-ntp", "--out", str(out), "--run-name", "x", "--device",
                    "cpu", "--limit", "1", "--set", "needle.context_lengths=128,256", "--set", "needle.depths=0,50",
                    "--set", "needle.haystack=noise"], cwd=root, check=True, capture_output=True)
    run = json.loads((out / "x" / "run.json").read_text())
    assert run["git_commit"] is None and run["git_dirty"] is None


def test_commit_of_the_repository_that_tracks_the_package(tmp_path):
    root = copy_package(new_repo(tmp_path / "bench"))
    assert provenance(root) == {"git_commit": None, "git_dirty": None}  # present but untracked
    git(root, "add", "meap_bench")
    git(root, "commit", "-q", "-m", "package")
    assert provenance(root) == {"git_commit": git(root, "rev-parse", "HEAD"), "git_dirty": False}
    with open(root / "meap_bench" / "runner.py", "a") as handle:
        handle.write("# local edit\n")
    assert provenance(root) == {"git_commit": git(root, "rev-parse", "HEAD"), "git_dirty": True}


def test_tracked_copy_below_another_projects_root_is_not_claimed(tmp_path):
    repo = new_repo(tmp_path / "monorepo")
    root = copy_package(repo / "vendor")
    git(repo, "add", "vendor")
    git(repo, "commit", "-q", "-m", "vendored")
    assert provenance(root) == {"git_commit": None, "git_dirty": None}


def test_a_copy_shipped_without_git_names_its_commit_through_the_environment(tmp_path):
    """A copy of a commit run on a machine without `.git` (the GPU trainer) says which commit it is."""
    root = copy_package(tmp_path / "copy")
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert provenance(root, sha) == {"git_commit": sha, "git_dirty": None}
    assert provenance(root, "not-a-sha") == {"git_commit": None, "git_dirty": None}
