"""Commonsense through lm-eval: parity with lm-eval's own `hf` model on a tiny checkpoint built here,
fair (real-vocabulary) scoring of padded MEAP checkpoints, the `commonsense` task end to end through
the CLI (lm-eval JSON, per-sample logs, records, table, resume) and offline errors."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from conftest import build_model, build_tokenizer
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from meap_bench.backends.hf import HFBackend
from meap_bench.backends.lm_eval_adapter import MeapBenchLM
from meap_bench.cli import main
from meap_bench.config import Checkpoint
from meap_bench.records import read_records
from meap_bench.report.strata import mean_stderr

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "tasks" / "commonsense"
LOCAL_TASKS = ["meap_arc_mini", "meap_boolq_mini"]
BATCH = 4


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory) -> Path:
    """A tiny random Llama whose tokenizer (trained on the local task texts) has no [MASK] and whose
    embedding has no padding rows: the real vocabulary is the whole vocabulary, so our scores must
    equal lm-eval's `hf` model's exactly (up to float noise)."""
    folder = tmp_path_factory.mktemp("plain")
    texts = [line for f in sorted(LOCAL.glob("*.jsonl")) for line in f.read_text().splitlines()]
    tokenizer = build_tokenizer(folder, vocab_size=600, texts=texts, special_tokens=("<s>", "</s>"))
    build_model(folder, tokenizer, len(tokenizer), seed=0, max_positions=256)
    return folder


@pytest.fixture(scope="module")
def local_manager() -> TaskManager:
    return TaskManager(include_path=str(LOCAL), include_defaults=False)


def ours(path: Path, max_length: int | None = None) -> MeapBenchLM:
    checkpoint = Checkpoint(name="t", path=str(path), dtype="float32", batch_size=BATCH, max_length=max_length)
    return MeapBenchLM(HFBackend(checkpoint, "cpu"))


def reference(path: Path, **kwargs) -> HFLM:
    return HFLM(pretrained=str(path), dtype="float32", batch_size=BATCH, device="cpu", **kwargs)


def test_parity_with_lm_eval_hf_model(plain_checkpoint, local_manager):
    """Per-request loglikelihoods within 1e-4 (fp32), identical is_greedy, identical acc and acc_norm."""
    runs = [lm_eval.simple_evaluate(model=lm, tasks=LOCAL_TASKS, task_manager=local_manager, log_samples=True)
            for lm in (ours(plain_checkpoint), reference(plain_checkpoint))]
    mine, theirs = runs
    compared = 0
    for task in LOCAL_TASKS:
        for a, b in zip(mine["samples"][task], theirs["samples"][task], strict=True):
            assert a["doc_id"] == b["doc_id"] and a["arguments"] == b["arguments"]
            for (ll_a, greedy_a), (ll_b, greedy_b) in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
                assert abs(float(ll_a) - float(ll_b)) <= 1e-4
                assert greedy_a == greedy_b
                compared += 1
            for metric in ("acc", "acc_norm"):
                assert a.get(metric) == b.get(metric)
        for key, value in theirs["results"][task].items():
            if key.startswith(("acc", "acc_norm")):
                assert mine["results"][task][key] == value, key
    assert compared == 32 * 4 + 32 * 2


def test_rolling_and_generation_match_lm_eval_hf(plain_checkpoint):
    """loglikelihood_rolling (with windows: max length 32) and greedy generate_until, same requests."""
    from lm_eval.api.instance import Instance

    texts = ["Question: Which planet is closest to the Sun?\nAnswer: Mercury. " * 6, "The Nile flows north."]
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    a = ours(plain_checkpoint, max_length=32).loglikelihood_rolling(rolling)
    b = reference(plain_checkpoint, max_length=32).loglikelihood_rolling(rolling)
    assert all(abs(x - y) <= 1e-4 for x, y in zip(a, b, strict=True))
    generate = [Instance("generate_until", {}, (t, {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}), i)
                for i, t in enumerate(["Question: Is the Sun a star?\nAnswer:", "The Moon is Earth's only"])]
    assert ours(plain_checkpoint).generate_until(generate) == reference(plain_checkpoint).generate_until(generate)


def test_padded_meap_checkpoint_is_scored_over_the_real_vocabulary(tiny_pair, local_manager):
    """On a MEAP checkpoint (padded embedding rows + [MASK]) the adapter normalises over the real
    vocabulary only, so every choice is at least as likely as under lm-eval's `hf` (whole vocabulary),
    and strictly more likely: the excluded rows carry some probability in a random model."""
    task = local_manager.load(["meap_arc_mini"])["tasks"]["meap_arc_mini"]
    task.build_all_requests(rank=0, world_size=1, limit=4)
    requests = task.instances
    a = ours(tiny_pair["meap"]).loglikelihood(requests)
    b = reference(tiny_pair["meap"]).loglikelihood(requests)
    assert all(x[0] > y[0] for x, y in zip(a, b, strict=True))


def run_args(checkpoints_yaml: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--tasks", "commonsense", "--checkpoints", str(checkpoints_yaml), "--out", str(out),
            "--run-name", "cs", "--device", "cpu", "--set", f"commonsense.tasks={','.join(LOCAL_TASKS)}",
            "--set", "commonsense.limit=12", *extra]


def test_commonsense_run_writes_lm_eval_outputs_records_and_table(checkpoints_yaml, tmp_path, capsys):
    assert main(run_args(checkpoints_yaml, tmp_path)) == 0
    printed = capsys.readouterr().out
    run_dir = tmp_path / "cs"
    records = read_records(run_dir / "records.jsonl")
    assert len(records) == 2 * 2 * 12 and {r.task for r in records} == {"commonsense"}
    for checkpoint in ("tiny-ntp", "tiny-meap"):
        for task in LOCAL_TASKS:
            folder = run_dir / "lm_eval" / checkpoint / task
            results = json.loads((folder / "results.json").read_text())
            samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
            assert len(samples) == 12
            mine = [r for r in records if r.checkpoint == checkpoint and r.cell["lm_eval_task"] == task]
            assert len(mine) == 12
            acc = [r.scores["acc"] for r in mine]
            assert sum(acc) / len(acc) == pytest.approx(results["results"][task]["acc,none"])
            assert mean_stderr_of(acc) == pytest.approx(results["results"][task]["acc_stderr,none"])
            first = mine[0]
            choices = 4 if task == "meap_arc_mini" else 2
            assert len(first.meta["loglikelihoods"]) == len(first.meta["is_greedy"]) == choices
            assert first.meta["gold"] == samples[0]["target"]
            best = max(range(choices), key=lambda i: first.meta["loglikelihoods"][i])
            assert first.scores["acc"] == float(best == first.meta["gold"])
            if task == "meap_arc_mini":
                assert "acc_norm" in first.scores
    table = (run_dir / "tables" / "commonsense_tasks.md").read_text()
    for text in ("meap_arc_mini acc_norm", "meap_boolq_mini acc", "average (acc_norm, else acc)",
                 "pair tiny: MEAP-NTP", " ± ", "95% CI over documents"):
        assert text in table and text in printed
    assert_headline_is_the_papers_average(json.loads((run_dir / "summary.json").read_text()), records, printed)

    before = (run_dir / "records.jsonl").read_bytes()
    results_files = sorted(run_dir.glob("lm_eval/*/*/results.json"))
    stamps = [p.stat().st_mtime_ns for p in results_files]
    assert main(run_args(checkpoints_yaml, tmp_path)) == 0  # finished lm-eval tasks are not recomputed
    assert (run_dir / "records.jsonl").read_bytes() == before
    assert [p.stat().st_mtime_ns for p in results_files] == stamps

    results_files[0].unlink()  # as if killed before that lm-eval task finished: it alone reruns
    assert main(run_args(checkpoints_yaml, tmp_path)) == 0
    assert (run_dir / "records.jsonl").read_bytes() == before and results_files[0].is_file()
    assert [p.stat().st_mtime_ns for p in results_files[1:]] == stamps[1:]
    capsys.readouterr()


def assert_headline_is_the_papers_average(summary: dict, records: list, printed: str) -> None:
    """Headline and pair delta: the unweighted mean over lm-eval tasks of acc_norm where a task has it and
    acc where it does not (BoolQ), not a pool of documents that drops BoolQ."""
    def task_means(checkpoint: str) -> dict[str, float]:
        mine = [r for r in records if r.checkpoint == checkpoint]
        return {task: sum(r.scores.get("acc_norm", r.scores["acc"]) for r in docs) / len(docs)
                for task in LOCAL_TASKS if (docs := [r for r in mine if r.cell["lm_eval_task"] == task])}

    result = summary["tasks"]["commonsense"]
    means = {c: task_means(c) for c in ("tiny-ntp", "tiny-meap")}
    for row in result["checkpoints"]:
        assert row["acc_norm"] == pytest.approx(sum(means[row["checkpoint"]].values()) / len(LOCAL_TASKS))
    pair = next(p for p in result["pairs"] if p["metric"] == "acc_norm")
    deltas = [means["tiny-meap"][t] - means["tiny-ntp"][t] for t in LOCAL_TASKS]
    assert pair["meap_minus_ntp"] == pytest.approx(sum(deltas) / len(deltas))
    assert pair["n_items"] == 2 * 12 and pair["n"] == 2 * 12 and pair["ci95_low"] <= pair["ci95_high"]
    assert result["headline"].startswith("acc_norm where a task reports it, else acc; unweighted")
    assert f"MEAP - NTP acc_norm = {pair['meap_minus_ntp']:+.3f}, 95% CI" in printed
    assert "n = 24 items / 24 samples" in printed


def mean_stderr_of(values: list[float]) -> float:
    import pandas as pd

    return mean_stderr(pd.Series(values))


def test_single_task_name_and_unknown_task(checkpoints_yaml, tmp_path, capsys):
    args = run_args(checkpoints_yaml, tmp_path, "--only", "tiny-ntp", "--set", "commonsense.limit=2")
    args[args.index(f"commonsense.tasks={','.join(LOCAL_TASKS)}")] = "commonsense.tasks=meap_boolq_mini"
    assert main(args) == 0
    assert len(read_records(tmp_path / "cs" / "records.jsonl")) == 2
    capsys.readouterr()
    bad = run_args(checkpoints_yaml, tmp_path, "--run-name", "bad", "--set", "commonsense.include_path=/nonexistent")
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "commonsense.include_path" in err


def test_hub_task_offline_is_a_one_line_error(checkpoints_yaml, tmp_path, capsys, monkeypatch):
    """A hub task whose dataset is not cached: the error names the task and how to run it."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    args = run_args(checkpoints_yaml, tmp_path, "--only", "tiny-ntp")
    args[args.index(f"commonsense.tasks={','.join(LOCAL_TASKS)}")] = "commonsense.tasks=arc_easy"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'arc_easy'" in err and "network" in err and "include_path" in err and "meap_arc_mini" in err
