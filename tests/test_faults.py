"""Durability with real processes: SIGKILL and SIGINT at seeded random moments and at every named fault
point (model load, mid-batch, inside a batch write, between checkpoints, inside the torn-tail repair,
during the report), two writers on one run directory, and a full disk. After every fault: no finished
record lost or changed, no duplicate key, every record equal to an uninterrupted run's; at the end of each
cycle, exactly the uninterrupted run's records."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from meap_bench.cli import main
from meap_bench.faults import ENV as FAULT_ENV
from meap_bench.records import read_records

REPO = Path(__file__).resolve().parents[1]
GRID = ["--tasks", "needle", "--set", "needle.context_lengths=64,256", "--set", "needle.haystack=noise",
        "--set", "needle.needle=sandwich", "--set", "needle.depths=0,25,50,75,100",
        "--limit", "2", "--device", "cpu"]
TOTAL = 2 * 2 * 5 * 2  # checkpoints x lengths x depths x samples
MIN_KILLS = 24
# From an empty run directory to a finished run, each step a fault that is sure to be reached in the state
# the steps before it leave: (point, action). Each checkpoint has 10 skipped samples (written first, with
# no model) and 10 run in one batch; weights load lazily, on the first batch.
SCRIPTED = [
    ("load", "kill"),  # checkpoint 1's weights loading
    ("chunk", "kill"),  # right after checkpoint 1's batch is written
    ("repair", "kill"),  # a torn tail is planted first: killed inside the repair
    ("repair", "int"),  # Ctrl-C inside the repair
    ("load", "int"),  # Ctrl-C while checkpoint 2's weights load
    ("write", "kill"),  # inside checkpoint 2's batch write, before its flush
    ("chunk", "int"),  # Ctrl-C right after checkpoint 2's batch is written
    ("checkpoint@2", "kill"),  # between checkpoints
    ("report", "int"),  # Ctrl-C during the report
    ("report", "kill"),  # killed during the report
]


STARTUP = [(0.5, "int"), (1.0, "int"), (1.5, "int"), (2.0, "int"), (2.5, "int"), (1.0, "kill")]


def run_args(checkpoints: Path, out: Path, name: str) -> list[str]:
    return ["run", *GRID, "--checkpoints", str(checkpoints), "--out", str(out), "--run-name", name]


def comparable(path: Path) -> dict[tuple, dict]:
    """Records by key, without what legitimately differs between runs (timing, run directory name).
    `read_records` refuses duplicate samples, so a duplicate fails here too."""
    out = {}
    for record in read_records(path):
        assert record.key not in out, f"duplicate key {record.key}"
        out[record.key] = {k: v for k, v in asdict(record).items() if k not in ("seconds", "run")}
    return out


def launch(args: list[str], fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen([sys.executable, "-m", "meap_bench", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


PRELOAD = ["torch", "transformers", "pandas", "matplotlib.pyplot", "seaborn", "meap_bench.cli", "meap_bench.runner",
           "meap_bench.report.build", "meap_bench.backends.hf", "meap_bench.tasks"]


def forked_main(argv: list[str], stderr_path: str, fault: str | None) -> None:
    """A child forked from a server that has imported everything already: a real process (killed by real
    signals) without the seconds of start-up, so that many kills stay cheap."""
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.environ.pop(FAULT_ENV, None)
    if fault:
        os.environ[FAULT_ENV] = fault
    sys.exit(main(argv))


def fork_run(argv: list[str], stderr_path: Path, fault: str | None = None) -> multiprocessing.Process:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    proc = ctx.Process(target=forked_main, args=(argv, str(stderr_path), fault), daemon=True)
    proc.start()
    return proc


def stop_at(proc: multiprocessing.Process, delay: float, action: str, stderr_path: Path) -> tuple[int, str]:
    """Wait `delay` seconds, then SIGKILL or SIGINT the child unless it finished; (exit code, stderr)."""
    proc.join(timeout=delay)
    if proc.exitcode is None:
        os.kill(proc.pid, signal.SIGKILL if action == "kill" else signal.SIGINT)
    proc.join(timeout=300)
    return proc.exitcode, stderr_path.read_text()


def last_line(stderr: str) -> str:
    """The last line a user sees (progress bars redraw with a carriage return)."""
    return stderr.strip().splitlines()[-1].split("\r")[-1] if stderr.strip() else ""


def check_kept(run_dir: Path, kept: bytes, baseline: dict) -> bytes:
    """After a fault: the complete lines before it are still there, unchanged (records are only ever
    appended), no key twice, and every record equals the uninterrupted run's. Returns the complete lines."""
    path = run_dir / "records.jsonl"
    data = path.read_bytes() if path.is_file() else b""
    complete = data[: data.rfind(b"\n") + 1]
    assert complete.startswith(kept), "a finished record was lost or changed"
    records = comparable(path)
    assert len(records) == complete.count(b"\n")
    for key, record in records.items():
        assert record == baseline[key]
    return complete


def plant_torn_tail(run_dir: Path) -> None:
    """What a kill inside a write leaves: the start of a record without its newline."""
    path = run_dir / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    with open(path, "ab") as handle:
        handle.write(lines[0][: len(lines[0]) // 2])


@pytest.fixture(scope="module")
def baseline(checkpoints_yaml, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("baseline")
    assert main(run_args(checkpoints_yaml, out, "whole")) == 0
    records = comparable(out / "whole" / "records.jsonl")
    assert len(records) == TOTAL
    return records


def fault_spec(point: str, action: str) -> str:
    name, _, nth = point.partition("@")
    return f"{name}:{action}" + (f"@{nth}" if nth else "")


def assert_stopped(code: int, stderr: str, action: str) -> None:
    """A kill is a kill; a Ctrl-C is exit 130 and one closing line saying what was kept."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    if action == "kill":
        assert code == -signal.SIGKILL, stderr
    else:
        assert code == 130, stderr
        assert last_line(stderr).startswith("interrupted"), stderr


def test_seeded_kills_lose_nothing_and_resume_to_the_uninterrupted_records(checkpoints_yaml, baseline, tmp_path):
    stderr_path = tmp_path / "stderr.txt"
    run_dir, kept = tmp_path / "scripted", b""
    args = run_args(checkpoints_yaml, tmp_path, run_dir.name)
    for point, action in SCRIPTED:  # every named moment, each sure to be reached in this order
        if point == "repair":
            plant_torn_tail(run_dir)
        assert_stopped(*stop_at(fork_run(args, stderr_path, fault_spec(point, action)), 300, action,
                               stderr_path), action)
        kept = check_kept(run_dir, kept, baseline)
    assert kept.count(b"\n") == TOTAL  # the last faults hit the report: every record was already written
    kills = len(SCRIPTED)

    for delay, action in STARTUP:  # `python -m` while torch and transformers import
        proc = launch(run_args(checkpoints_yaml, tmp_path, "startup"))
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL if action == "kill" else signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
        assert_stopped(proc.returncode, stderr, action)
        check_kept(tmp_path / "startup", b"", baseline)
        kills += 1

    rng = random.Random(20250101)  # then seeded random moments, by the clock: start-up to report
    cycles, run_dir, kept = 0, tmp_path / "random0", b""
    while kills < MIN_KILLS:
        action, delay = rng.choice(["kill", "int"]), rng.uniform(0.05, 4.0)
        code, stderr = stop_at(fork_run(run_args(checkpoints_yaml, tmp_path, run_dir.name), stderr_path),
                               delay, action, stderr_path)
        if code == 0:  # finished before the signal: a new cycle from an empty directory
            assert comparable(run_dir / "records.jsonl") == baseline
            cycles += 1
            run_dir, kept = tmp_path / f"random{cycles}", b""
            continue
        assert_stopped(code, stderr, action)
        kept = check_kept(run_dir, kept, baseline)
        kills += 1

    for folder in {tmp_path / "scripted", run_dir}:  # resumed once more, each ends with the whole run
        code, stderr = stop_at(fork_run(run_args(checkpoints_yaml, tmp_path, folder.name), stderr_path), 300, "",
                               stderr_path)
        assert code == 0, stderr
        assert comparable(folder / "records.jsonl") == baseline


def test_ctrl_c_swallowed_by_a_finaliser_in_the_report_still_stops_with_130(checkpoints_yaml, baseline, tmp_path):
    stderr_path = tmp_path / "stderr.txt"
    args = run_args(checkpoints_yaml, tmp_path, "swallowed")
    code, stderr = stop_at(fork_run(args, stderr_path, "report:swallowed"), 300, "int", stderr_path)
    assert_stopped(code, stderr, "int")
    assert last_line(stderr).startswith("interrupted during the report: 40 finished records are kept")


def test_two_writers_on_one_run_directory_exactly_one_proceeds(checkpoints_yaml, baseline, tmp_path, capsys):
    args = run_args(checkpoints_yaml, tmp_path, "shared")
    run_dir = tmp_path / "shared"
    # started together; whichever takes the run directory first pauses after its first batch, holding it
    procs = [fork_run(args, tmp_path / f"writer{i}.txt", "chunk:pause") for i in range(2)]
    try:
        deadline = time.time() + 300
        while time.time() < deadline and all(p.exitcode is None for p in procs):
            time.sleep(0.1)
        (loser,) = [p for p in procs if p.exitcode is not None]
        (holder,) = [p for p in procs if p is not loser]
        err = (tmp_path / f"writer{procs.index(loser)}.txt").read_text()
        assert loser.exitcode == 1 and err.count("\n") == 1, err
        assert f"is in use by another meap-bench process (PID {holder.pid})" in err

        while time.time() < deadline and not (run_dir / "records.jsonl").is_file():
            time.sleep(0.1)  # the holder has written run.json and its first batch
        assert main(["report", str(run_dir)]) == 1  # the report's writes wait for the run too
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"(PID {holder.pid})" in err
    finally:
        for proc in procs:
            if proc.exitcode is None:  # the holder dies holding the lock: a stale lock file with its PID
                os.kill(proc.pid, signal.SIGKILL)
                proc.join()
    assert (run_dir / "run.lock").read_text().strip() == str(holder.pid)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"left by process {holder.pid}" in err and "taking it over" in err
    assert comparable(run_dir / "records.jsonl") == baseline


def test_kill_inside_the_repair_of_a_large_file_loses_nothing(tmp_path):
    """The repair window, made wide and hit for certain: 150,060 records and a torn tail, killed in the
    middle of the repair; then repaired for real."""
    path = tmp_path / "records.jsonl"
    line = b'{"schema": 2, "sample_id": "' + b"x" * 150 + b'"}\n'
    whole = line * 150_060
    path.write_bytes(whole + line[:40])
    code = "import sys; from pathlib import Path; from meap_bench.records import RecordWriter; " \
           "RecordWriter(Path(sys.argv[1])).close()"
    env = {**os.environ, FAULT_ENV: "repair:kill"}
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, env=env)
    assert result.returncode == -signal.SIGKILL
    assert path.read_bytes()[: len(whole)] == whole
    env.pop(FAULT_ENV)
    assert subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, env=env).returncode == 0
    assert path.stat().st_size == len(whole) and path.read_bytes() == whole


def test_full_disk_at_a_fault_point_is_one_line_exit_1_and_resumable(checkpoints_yaml, baseline, tmp_path, capsys,
                                                                     monkeypatch):
    args = run_args(checkpoints_yaml, tmp_path, "enospc")
    monkeypatch.setenv(FAULT_ENV, "write:enospc@2")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "records.jsonl" in err and "the disk is full" in err
    assert "finished records are kept" in err
    kept = check_kept(tmp_path / "enospc", b"", baseline)
    assert 0 < kept.count(b"\n") < TOTAL
    monkeypatch.delenv(FAULT_ENV)
    assert main(args) == 0
    assert comparable(tmp_path / "enospc" / "records.jsonl") == baseline


def mount_tmpfs(folder: Path, options: str) -> None:
    """A tmpfs at `folder` (root only; the test is skipped elsewhere)."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("this platform does not allow mounting a tmpfs")


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount_tmpfs(mount, "size=1m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_read_only_out_is_one_line_exit_1(checkpoints_yaml, tmp_path, capsys):
    out = tmp_path / "read-only"
    if os.geteuid() == 0:
        mount_tmpfs(out, "ro,size=64k")
    else:
        out.mkdir()
        out.chmod(0o555)
    try:
        assert main(run_args(checkpoints_yaml, out, "r")) == 1
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(out)], check=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {out / 'r'}: ") and "cannot write there" in err, err


def test_full_disk_on_a_real_tmpfs(checkpoints_yaml, baseline, small_tmpfs, capsys):
    filler = small_tmpfs / "filler"
    free = shutil.disk_usage(small_tmpfs).free
    filler.write_bytes(b"\0" * (free - 16 * 1024))  # room for run.json and a few records
    args = run_args(checkpoints_yaml, small_tmpfs, "full")
    assert main(args) == 1
    line = last_line(capsys.readouterr().err)
    assert line.startswith(f"error: {small_tmpfs / 'full'}") and "the disk is full" in line, line
    assert "finished records are kept" in line
    kept = check_kept(small_tmpfs / "full", b"", baseline)
    assert kept.count(b"\n") < TOTAL
    filler.unlink()
    assert main(args) == 0
    assert comparable(small_tmpfs / "full" / "records.jsonl") == baseline
