"""The run directory's safety rules: names that cannot leave it, durable atomic writes, one writer at a
time, and a run.json that is checked before anything trusts it."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from meap_bench.errors import EnvironmentFault, UserError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}")
UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+=@-]")
NAME_RULE = "a plain name: letters, digits and . _ + = @ -, starting with a letter or digit, at most 128 characters"
LOCK_FILE = "run.lock"
RUN_JSON = "run.json"
RECORDS = "records.jsonl"


def name_problem(value: Any) -> str | None:
    """Why `value` cannot be used in a file name inside the run directory (None: it can)."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        return f"must be {NAME_RULE} (no '/', no '..')"
    return None


def check_name(value: str, what: str) -> str:
    problem = name_problem(value)
    if problem:
        raise UserError(f"{what} {value!r} {problem}")
    return value


def safe_filename(name: str) -> str:
    """`name` made harmless as one file-name component: separators and other odd characters become `_`
    and leading dots go, so names read from records can never point outside the folder they go in."""
    cleaned = UNSAFE_CHARS.sub("_", str(name)).lstrip(".")[:200]
    return cleaned or "_"


def inside(root: Path, path: Path) -> Path:
    """`path`, after proving that it (links resolved) lies inside `root`."""
    real_root, real = root.resolve(), path.resolve()
    if real != real_root and real_root not in real.parents:
        raise UserError(f"refusing to write {path}: it lies outside the run directory {root}")
    return path


def fsync_dir(folder: Path) -> None:
    """Make a created, renamed or removed directory entry durable (a file's own fsync does not)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory; nothing more can be done there
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash at any moment leaves either the old or the new file,
    whole: write a temporary file beside it, fsync it, rename it over, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    fsync_dir(path.parent)


def prepare_run_dir(out: Path, name: str) -> Path:
    """`out/name`, created: `name` must be a plain name, `out` a folder (or creatable)."""
    check_name(name, "--run-name")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: it is a file, not a folder; give a folder for the run directories")
    run_dir = inside(out, out / name)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: it is a file, not a run directory; choose another --run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class RunLock:
    """An exclusive `flock` on RUN_DIR/run.lock, held for a whole run (or a report's writes): a second
    writer is refused with the holder's PID. The kernel drops the lock when its holder dies, however it
    dies, so a lock left by a killed process is taken over, never waited on."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl  # POSIX; the lock is what keeps two writers from duplicating records

        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "not yet written"
            os.close(fd)
            raise EnvironmentFault(f"{self.run_dir} is in use by another meap-bench process (PID {holder}); "
                                   f"wait for it to finish or stop it, then run the command again") from None
        stale = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if stale:
            print(f"note: {self.run_dir / LOCK_FILE} was left by process {stale}, which no longer holds it "
                  f"(killed?); taking it over", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # an empty lock file: nobody was killed holding it
            finally:
                os.close(self.fd)  # closing drops the flock
                self.fd = None


class RunInfo(BaseModel):
    """What run.json must hold for `--resume` and `report` to trust it (other keys are kept as they are)."""

    model_config = ConfigDict(extra="allow")

    run: str
    tasks: dict[str, dict[str, Any]] = Field(min_length=1)
    checkpoints: list[dict[str, Any]] = Field(min_length=1)
    seed: int
    limit: PositiveInt | None
    backend: str
    device: str
    fingerprints: dict[str, str] = Field(default_factory=dict)


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """run.json, decoded and checked: a damaged or edited file is a one-line UserError, not a traceback."""
    from meap_bench.config import describe_validation_error

    path = run_dir / RUN_JSON
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RUN_JSON} there; give a run directory written by `run`")
    damaged = "the file was edited or damaged: restore it or start a new run directory"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; {damaged}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); {damaged}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}; {damaged}")
    try:
        RunInfo.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{path}: {describe_validation_error(err, 'run')}; {damaged}") from None
    for task in data["tasks"]:
        if name_problem(task):
            raise UserError(f"{path}: task name '{task}' {name_problem(task)}; {damaged}")
    return data


def run_checkpoints(data: dict[str, Any], run_dir: Path) -> list:
    """The checkpoints of a checked run.json, each validated as in checkpoints.yaml."""
    from meap_bench.config import Checkpoint, validate

    return [validate(Checkpoint, entry, str(run_dir / RUN_JSON), f"checkpoints #{i + 1}")
            for i, entry in enumerate(data["checkpoints"])]


def count_records(run_dir: Path) -> int:
    """Complete lines of records.jsonl (0 when there is none): what an interrupted run kept."""
    path = run_dir / RECORDS
    if not path.is_file():
        return 0
    count = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return count
