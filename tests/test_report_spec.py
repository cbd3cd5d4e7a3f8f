"""Tasks declare their report (ReportSpec); the runner records it in run.json and report/ draws from that alone:
a task that exists only in this test gets its tables and figures with no report code, even once its code is gone;
runs recorded before specs fall back to the task registry with identical outputs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from meap_bench.backends.base import LLOutput
from meap_bench.cli import main
from meap_bench.records import read_records
from meap_bench.report_spec import Bars, Heatmap, PositionSweep, ReportSpec
from meap_bench.tasks import TASKS, ModelContext, Sample, Task, TaskConfig
from meap_bench.tasks.base import encode_prompt
from meap_bench.tasks.needle import NeedleTask

WORDS = ["apple", "river", "baker", "valley", "journey", "morning"]
RULE = "exact match (a rule, not a judge)"


class WordsConfig(TaskConfig):
    items: int = 6


class WordGridTask(Task):
    """A word among `size` words at `position`; asked to name it. Cells {size, position}; scored by `contains`."""

    name = "wordgrid"
    config_model = WordsConfig
    config: WordsConfig
    report = ReportSpec(axis_labels={"size": "Words in context", "position": "Word position"},
                        heatmap=Heatmap(rows="position", columns="size"),
                        bars=Bars(group="size", metric="contains", judge=RULE))

    def samples(self, model: ModelContext) -> Iterator[Sample]:
        for i in range(self.config.items):
            target = WORDS[i % len(WORDS)]
            for n in (3, 4):
                for position in range(1, n + 1):
                    words = [w for w in WORDS if w != target][: n - 1]
                    words.insert(position - 1, target)
                    text, enc = encode_prompt(model, f"Words: {' '.join(words)}. Name word {position}.", "Answer:")
                    yield Sample(f"n{n}-p{position}-{i}", {"size": n, "position": position}, target, item_id=f"w-{i}",
                                 prompt_text=text, prompt_ids=list(enc["input_ids"]), max_new_tokens=6)

    def score(self, sample: Sample, output: str | None, choices: list[LLOutput]) -> dict[str, float]:
        return {"contains": float(sample.target in (output or ""))}


class WordSweepTask(WordGridTask):
    name = "wordsweep"
    report = ReportSpec(axis_labels={"size": "Words in context"},
                        positions=PositionSweep(size="size", size_label="words", position_label="Word position"))


def run_args(checkpoints_yaml: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["run", "--checkpoints", str(checkpoints_yaml), "--out", str(out), "--run-name", name, "--backend", "fake",
            "--device", "cpu", *extra]


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes()
            for p in sorted([*(run_dir / "tables").iterdir(), *(run_dir / "figures").iterdir()])}


def test_a_task_declared_only_in_a_test_gets_its_tables_and_figures(checkpoints_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(TASKS, WordGridTask.name, WordGridTask)
    monkeypatch.setitem(TASKS, WordSweepTask.name, WordSweepTask)
    for checkpoint in ("tiny-ntp", "tiny-meap"):  # one run per checkpoint, merged by `report`
        assert main(run_args(checkpoints_yaml, tmp_path, checkpoint, "--tasks", "wordgrid,wordsweep",
                             "--only", checkpoint)) == 0
    run = json.loads((tmp_path / "tiny-ntp" / "run.json").read_text())
    assert run["reports"]["wordgrid"] == WordGridTask.report.to_json()
    monkeypatch.delitem(TASKS, WordGridTask.name)  # from here on no code of these tasks exists: run.json is enough
    monkeypatch.delitem(TASKS, WordSweepTask.name)
    capsys.readouterr()
    merged = tmp_path / "merged"
    assert main(["report", str(tmp_path / "tiny-ntp"), str(tmp_path / "tiny-meap"), "--out", str(merged)]) == 0
    printed = capsys.readouterr().out

    tables = {p.stem for p in (merged / "tables").glob("*.csv")}
    assert {"wordgrid_cells", "wordgrid_summary", "wordgrid_pairs", "wordgrid_pairs_cells", "wordgrid_contains",
            "wordgrid_pairs_by_size", "wordsweep_positions", "wordsweep_averaged", "wordsweep_pairs_averaged"} <= tables
    figures = {p.stem for p in (merged / "figures").glob("*.png")}
    assert {"wordgrid_heatmap_tiny-ntp", "wordgrid_heatmap_tiny-meap", "wordgrid_pair_tiny", "wordgrid_contains",
            "wordsweep_curves", "wordsweep_heatmap_tiny-ntp", "wordsweep_pair_tiny"} <= figures
    index = (merged / "index.html").read_text()
    assert 'src="figures/wordgrid_contains.png"' in index and "wordsweep_averaged" in index

    # the bar table holds the records' shares per checkpoint and size (and their average), the rule named
    records = read_records(merged / "records.jsonl")
    grid = pd.DataFrame([{"checkpoint": r.checkpoint, "size": str(r.cell["size"]), "contains": r.scores["contains"]}
                         for r in records if r.task == "wordgrid"])
    assert len(grid) == 2 * 6 * (3 + 4) and 0 < grid["contains"].mean() < 1
    shares = pd.read_csv(merged / "tables" / "wordgrid_contains.csv", dtype={"size": str})
    assert set(shares["judge"]) == {RULE} and set(shares["size"]) == {"3", "4", "average"}
    expected = grid.groupby(["checkpoint", "size"])["contains"].mean()
    for _, row in shares[shares["size"] != "average"].iterrows():
        assert row["contains"] == pytest.approx(expected[(row["checkpoint"], row["size"])], abs=1e-4)
    # the sweep's size is named as its spec says, in the table and in the printed pair lines
    averaged = pd.read_csv(merged / "tables" / "wordsweep_averaged.csv")
    assert {"3 words: avg over positions", "4 words: avg over positions"} <= set(averaged.columns)
    assert "  3 words, avg over positions = " in printed and "  4 words, avg over positions = " in printed


def test_runs_recorded_without_specs_report_the_same_through_the_registry(checkpoints_yaml, tmp_path, capsys):
    args = run_args(checkpoints_yaml, tmp_path, "n", "--tasks", "needle", "--set", "needle.context_lengths=128",
                    "--set", "needle.depths=0,100", "--set", "needle.haystack=noise", "--set", "needle.distractors=3",
                    "--set", "needle.samples_per_cell=3", "--set", "needle.headline_metric=rank")
    assert main(args) == 0
    run_dir = tmp_path / "n"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["reports"]["needle"] == NeedleTask.report_spec(run["tasks"]["needle"]).to_json()
    assert run["reports"]["needle"]["heatmap"]["chance"] == {"rank": 0.25}  # the gold among 3 distractors
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    del run["reports"]  # as run.json was before specs were recorded
    (old / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    assert main(["report", str(old)]) == 0 and main(["report", str(run_dir)]) == 0
    assert outputs(old) == outputs(run_dir) and len(outputs(run_dir)) > 10
    capsys.readouterr()


def test_a_damaged_spec_in_run_json_is_one_line(checkpoints_yaml, tmp_path, capsys):
    assert main(run_args(checkpoints_yaml, tmp_path, "n", "--tasks", "needle", "--set", "needle.context_lengths=128",
                         "--set", "needle.depths=0", "--set", "needle.samples_per_cell=1",
                         "--set", "needle.haystack=noise")) == 0
    path = tmp_path / "n" / "run.json"
    run = json.loads(path.read_text())
    run["reports"]["needle"]["heatmap"]["rows"] = 5
    path.write_text(json.dumps(run))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err.strip()
    assert "run.json: reports.needle: heatmap.rows: Input should be a valid string" in err and "\n" not in err
