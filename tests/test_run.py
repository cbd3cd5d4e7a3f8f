"""End to end through the CLI: records, report, rerun computes nothing, kill + resume loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from meap_bench.cli import main
from meap_bench.records import read_records

REPO = Path(__file__).resolve().parents[1]
GRID = ["--set", "needle.context_lengths=128,256", "--set", "needle.depths=0,50,100",
        "--set", "needle.haystack=noise", "--set", "needle.samples_per_cell=5"]


def run_args(checkpoints_yaml: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["run", "--tasks", "needle", "--checkpoints", str(checkpoints_yaml), "--out", str(out),
            "--run-name", name, "--device", "cpu", *GRID, *extra]


def test_run_writes_everything_and_rerun_computes_nothing(checkpoints_yaml, tmp_path, capsys):
    assert main(run_args(checkpoints_yaml, tmp_path, "r1")) == 0
    run_dir = tmp_path / "r1"
    records = read_records(run_dir / "records.jsonl")
    assert len(records) == 2 * 2 * 3 * 5
    assert {r.status for r in records} == {"ok"}
    assert all(r.prompt_tokens + 16 <= r.cell["length"] for r in records)
    run = json.loads((run_dir / "run.json").read_text())
    assert set(run["fingerprints"]) == {"tiny-ntp", "tiny-meap"} and run["seed"] == 0
    for name in ["needle_cells", "needle_summary", "needle_pairs", "needle_pairs_cells"]:
        assert (run_dir / "tables" / f"{name}.md").is_file() and (run_dir / "tables" / f"{name}.csv").is_file()
    for name in ["needle_heatmap_tiny-ntp", "needle_heatmap_tiny-meap", "needle_pair_tiny"]:
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 0
        assert (run_dir / "figures" / f"{name}.pdf").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tasks"]["needle"]["pairs"][0]["n"] == 30
    assert_paired_statistics(summary["tasks"]["needle"], capsys.readouterr().out, cells=6, items=5)

    before = (run_dir / "records.jsonl").read_bytes()
    tables = {p.name: p.read_bytes() for p in (run_dir / "tables").iterdir()}
    assert main(run_args(checkpoints_yaml, tmp_path, "r1")) == 0
    assert (run_dir / "records.jsonl").read_bytes() == before  # nothing recomputed
    assert main(["report", str(run_dir)]) == 0
    assert {p.name: p.read_bytes() for p in (run_dir / "tables").iterdir()} == tables
    capsys.readouterr()


def assert_paired_statistics(result: dict, printed: str, cells: int, items: int) -> None:
    """summary.json and the printed summary give, per pair, delta, item-clustered 95% interval, p-value and
    distinct items; the per-cell table adds McNemar / permutation p and Holm's adjustment over the grid."""
    metric = result["headline_metric"]
    pair = next(p for p in result["pairs"] if p["metric"] == metric)
    assert pair["n_items"] == items and pair["resampled"] == "item"
    assert pair["ci95_low"] <= pair["meap_minus_ntp"] <= pair["ci95_high"] and 0 < pair["p_value"] <= 1
    assert f"MEAP - NTP {metric} = {pair['meap_minus_ntp']:+.3f}, 95% CI [{pair['ci95_low']:+.3f}, " in printed
    assert "(bootstrap over items), p = " in printed and f"n = {items} items / {pair['n']} samples" in printed
    per_cell = [p for p in result["pairs_cells"] if p["metric"] == metric]
    assert len(per_cell) == cells and all(p["n_items"] == items for p in per_cell)
    assert {p["test"] for p in per_cell} <= {"McNemar exact", "sign-flip permutation"}
    assert all(p["p_value"] <= p["p_holm"] <= min(1.0, cells * p["p_value"]) + 1e-12 for p in per_cell)


def test_skipped_cells_are_recorded_and_marked(checkpoints_yaml, tmp_path):
    args = run_args(checkpoints_yaml, tmp_path, "skip", "--only", "tiny-ntp", "--limit", "1")
    args[args.index("needle.context_lengths=128,256")] = "needle.context_lengths=128,4096"
    assert main(args) == 0
    records = read_records(tmp_path / "skip" / "records.jsonl")
    skipped = [r for r in records if r.status == "skipped"]
    assert len(skipped) == 3 and all(r.cell["length"] == 4096 and r.output is None for r in skipped)
    cells = json.loads((tmp_path / "skip" / "summary.json").read_text())["tasks"]["needle"]["cells"]
    assert sum(c["skipped"] for c in cells) == 3


def test_killed_run_resumes_without_loss_or_duplicates(checkpoints_yaml, tmp_path):
    grid = ["--set", "needle.context_lengths=128,256,384", "--set", "needle.samples_per_cell=6"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "meap_bench", *run_args(checkpoints_yaml, tmp_path, "killed"), *grid]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records_path = tmp_path / "killed" / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if records_path.is_file() and records_path.read_bytes().count(b"\n") >= 16:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = records_path.read_bytes()
    kept = partial[: partial.rfind(b"\n") + 1]
    total = 2 * 3 * 3 * 6
    assert 16 <= kept.count(b"\n") < total, "the run must be killed mid-way"

    assert main(run_args(checkpoints_yaml, tmp_path, "killed", *grid)) == 0
    resumed = records_path.read_bytes()
    assert resumed.startswith(kept)  # finished samples are kept as they were, not recomputed
    records = read_records(records_path)
    assert len(records) == total and len({r.key for r in records}) == total

    assert main(run_args(checkpoints_yaml, tmp_path, "whole", *grid)) == 0
    cells = [json.loads((tmp_path / n / "summary.json").read_text())["tasks"]["needle"]["cells"]
             for n in ("killed", "whole")]
    assert cells[0] == cells[1]
