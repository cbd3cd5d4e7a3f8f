"""Which meap-bench source produced a result: the commit of the git checkout the running package comes
from, or nothing. A copy of the package that some other repository happens to contain (or that no
repository tracks) has no commit of its own, so none is claimed."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROBE = f"{PACKAGE_DIR.name}/runner.py"  # a file every checkout of meap-bench tracks


def git(folder: Path, *args: str) -> str | None:
    """stdout of a git command, or None when git is missing or the command fails."""
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@cache
def source_commit() -> dict[str, str | bool | None]:
    """`{"git_commit": sha, "git_dirty": bool}` when the package is tracked by a repository rooted just above
    it; both None otherwise. Dirty means the package's own files differ from that commit. A copy made from
    a commit (say, shipped to a GPU machine without `.git`) names it with `MEAP_BENCH_GIT_COMMIT`."""
    given = os.environ.get("MEAP_BENCH_GIT_COMMIT", "")
    if re.fullmatch(r"[0-9a-f]{40}", given):
        return {"git_commit": given, "git_dirty": None}
    top = git(PACKAGE_DIR, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != PACKAGE_DIR.parent or git(Path(top), "ls-files", "--error-unmatch",
                                                                       "--", PROBE) is None:
        return {"git_commit": None, "git_dirty": None}
    commit = git(Path(top), "rev-parse", "HEAD")
    status = git(Path(top), "status", "--porcelain", "--", PACKAGE_DIR.name)
    return {"git_commit": commit, "git_dirty": bool(status) if commit and status is not None else None}
