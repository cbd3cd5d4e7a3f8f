"""No stale, mixed or silent results: changed weights are refused (or started afresh on request), reports use
only the records of run.json's current weights, runs without pairs report, all-skipped tasks say so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import build_model
from transformers import AutoTokenizer

from meap_bench.cli import main
from meap_bench.records import read_records

GRID = ["--set", "needle.context_lengths=128,256", "--set", "needle.depths=0,50", "--set", "needle.haystack=noise",
        "--set", "needle.samples_per_cell=3"]


def run_args(checkpoints: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["run", "--tasks", "needle", "--checkpoints", str(checkpoints), "--out", str(out), "--run-name", name,
            "--device", "cpu", *GRID, *extra]


def pair_yaml(folder: Path, ntp: Path, meap: Path, pair: str | None = "tiny", ntp_extra: str = "") -> Path:
    path = folder / "checkpoints.yaml"
    pair_line = f"  pair: {pair}\n" if pair else ""
    path.write_text(f"- name: tiny-ntp\n  path: {ntp}\n  objective: ntp\n{pair_line}{ntp_extra}"
                    f"- name: tiny-meap\n  path: {meap}\n  objective: meap\n{pair_line}")
    return path


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


@pytest.fixture
def own_pair(tiny_pair, tmp_path) -> dict[str, Path]:
    """Copies of the tiny pair that a test may retrain in place."""
    copies = {name: shutil.copytree(tiny_pair[name], tmp_path / "ck" / name) for name in ("ntp", "meap")}
    return {**copies, "yaml": pair_yaml(tmp_path / "ck", copies["ntp"], copies["meap"])}


def retrain(folder: Path, seed: int) -> None:
    """Other weights in the same folder, as retraining a checkpoint leaves it."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    build_model(folder, tokenizer, len(tokenizer), seed=seed)


def test_changed_weights_are_refused_then_started_afresh_on_request(own_pair, tmp_path, capsys):
    args = run_args(own_pair["yaml"], tmp_path, "r")
    run_dir, records_path = tmp_path / "r", tmp_path / "r" / "records.jsonl"
    assert main(args) == 0
    old = json.loads((run_dir / "run.json").read_text())["fingerprints"]
    first = records_path.read_bytes()
    capsys.readouterr()

    retrain(own_pair["ntp"], seed=11)
    assert main(args) == 2  # the same command after retraining
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "checkpoint 'tiny-ntp' changed" in err and old["tiny-ntp"] in err
    assert "--run-name" in err and "--fresh tiny-ntp" in err
    new_fingerprint = err.split(" -> ")[1].split(")")[0]
    assert new_fingerprint != old["tiny-ntp"]
    assert main(["run", "--resume", str(run_dir)]) == 2  # resuming is refused alike
    assert records_path.read_bytes() == first  # nothing appended beside the old records
    capsys.readouterr()

    assert main([*args, "--fresh", "tiny-ntp"]) == 0
    capsys.readouterr()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["fingerprints"] == {"tiny-ntp": new_fingerprint, "tiny-meap": old["tiny-meap"]}
    records = read_records(records_path)
    assert len(records) == 2 * 2 * 2 * 3
    assert all(r.fingerprint == run["fingerprints"][r.checkpoint] and r.backend == "hf" for r in records)
    stale = read_records(run_dir / "stale" / f"tiny-ntp-{old['tiny-ntp']}.jsonl")
    assert len(stale) == 12 and {r.fingerprint for r in stale} == {old["tiny-ntp"]}
    summary = json.loads((run_dir / "summary.json").read_text())

    # a records file mixing old and new weights (as earlier versions appended): the report uses only
    # run.json's current weights, says what it left out, and gives the same numbers
    with open(records_path, "a", encoding="utf-8") as handle:
        handle.write((run_dir / "stale" / f"tiny-ntp-{old['tiny-ntp']}.jsonl").read_text(encoding="utf-8"))
    assert main(["report", str(run_dir)]) == 0
    warned = warnings_of(capsys.readouterr().err)
    assert len(warned) == 1 and "left out 12 records of tiny-ntp" in warned[0] and old["tiny-ntp"] in warned[0]
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["tasks"] == summary["tasks"] and again["tasks"]["needle"]["pairs"][0]["n"] == 12


def test_another_backend_is_refused_in_the_same_run_directory(own_pair, tmp_path, capsys):
    run_dir = tmp_path / "b"
    args = run_args(own_pair["yaml"], tmp_path, "b", "--limit", "1", "--only", "tiny-ntp")
    assert main(args) == 0
    run = json.loads((run_dir / "run.json").read_text())
    run["backend"] = "vllm"
    (run_dir / "run.json").write_text(json.dumps(run))
    capsys.readouterr()
    assert main(args) == 2
    assert "holds records of backend 'vllm', not 'hf'" in capsys.readouterr().err


def no_pair_outputs(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tasks"]["needle"]["pairs"] == []
    assert not list((run_dir / "tables").glob("*pairs*")) and not list((run_dir / "figures").glob("*_pair_*"))
    assert (run_dir / "tables" / "needle_summary.md").is_file() and (run_dir / "tables" / "needle_cells.csv").is_file()


def test_single_checkpoint_and_pairless_runs_report(tiny_pair, checkpoints_yaml, tmp_path, capsys):
    assert main(run_args(checkpoints_yaml, tmp_path, "one", "--only", "tiny-ntp", "--limit", "1")) == 0
    no_pair_outputs(tmp_path / "one")
    assert (tmp_path / "one" / "figures" / "needle_heatmap_tiny-ntp.png").stat().st_size > 0

    pairless = pair_yaml(tmp_path, tiny_pair["ntp"], tiny_pair["meap"], pair=None)
    assert main(run_args(pairless, tmp_path, "nopair", "--limit", "1")) == 0
    no_pair_outputs(tmp_path / "nopair")
    for name in ("tiny-ntp", "tiny-meap"):
        assert (tmp_path / "nopair" / "figures" / f"needle_heatmap_{name}.png").stat().st_size > 0
    assert main(["report", str(tmp_path / "nopair")]) == 0
    out = capsys.readouterr().out
    assert "| tiny-meap" in out and "| tiny-ntp" in out and "pair " not in out


def test_pair_with_one_member_recorded_reports_without_pair_section(checkpoints_yaml, tmp_path, capsys):
    run_dir = tmp_path / "half"
    assert main(run_args(checkpoints_yaml, tmp_path, "half", "--limit", "1")) == 0
    assert list((run_dir / "figures").glob("needle_pair_tiny.*")) and (run_dir / "tables" / "needle_pairs.md").exists()
    records_path = run_dir / "records.jsonl"  # as if the run was stopped before tiny-meap
    kept = [line for line in records_path.read_text().splitlines(keepends=True) if '"tiny-meap"' not in line]
    records_path.write_text("".join(kept))
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    no_pair_outputs(run_dir)  # and the pair figure and table of the earlier report are gone
    assert "| tiny-ntp" in capsys.readouterr().out


def test_all_skipped_task_is_loud_and_not_shown_as_a_result(checkpoints_yaml, tmp_path, capsys):
    args = run_args(checkpoints_yaml, tmp_path, "big", "--limit", "1")
    args[args.index("needle.context_lengths=128,256")] = "needle.context_lengths=1024,2048"  # > 512 positions
    assert main(args) == 0
    captured = capsys.readouterr()
    warned = warnings_of(captured.err)
    assert warned == [f"warning: needle: all 4 samples of {name} were skipped (context length 1024 > checkpoint "
                      f"max length 512); no result" for name in ("tiny-meap", "tiny-ntp")]
    assert "| tiny-ntp" not in captured.out and "nan" not in captured.out
    assert "needle: no result: every sample of every checkpoint was skipped" in captured.out
    summary = json.loads((tmp_path / "big" / "summary.json").read_text())
    needle = summary["tasks"]["needle"]
    assert needle["status"] == "all_skipped"
    assert needle["skipped_checkpoints"]["tiny-ntp"] == {
        "samples": 4, "reason": "context length 1024 > checkpoint max length 512"}
    assert summary["warnings"] == [w.removeprefix("warning: ") for w in warned]


def test_checkpoint_with_every_sample_skipped_is_left_out_of_the_printed_table(tiny_pair, tmp_path, capsys):
    short = pair_yaml(tmp_path, tiny_pair["ntp"], tiny_pair["meap"], ntp_extra="  max_length: 100\n")
    assert main(run_args(short, tmp_path, "short", "--limit", "1")) == 0
    captured = capsys.readouterr()
    assert warnings_of(captured.err) == ["warning: needle: all 4 samples of tiny-ntp were skipped (context length "
                                         "128 > checkpoint max length 100); no result"]
    assert "| tiny-meap" in captured.out and "| tiny-ntp" not in captured.out and "nan" not in captured.out
    summary = json.loads((tmp_path / "short" / "summary.json").read_text())
    assert summary["tasks"]["needle"]["status"] == "some_skipped"
    assert set(summary["tasks"]["needle"]["skipped_checkpoints"]) == {"tiny-ntp"}
