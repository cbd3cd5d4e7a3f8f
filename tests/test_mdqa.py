"""Multi-document QA: official-format cell construction, the nq-oracle variant, the synthetic source's
training format, context fit with the real Llama tokenizer, bad input, and one run through the CLI."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import LLAMA_TOKENIZER, SHARED

from meap_bench.cli import main
from meap_bench.data import lost_in_middle as lim
from meap_bench.data.kjv import kjv_sentences
from meap_bench.data.synthetic import multidoc_example
from meap_bench.errors import UserError
from meap_bench.records import read_records
from meap_bench.report.curves import interval
from meap_bench.scoring import normalize_answer_lenient
from meap_bench.tasks.base import ModelContext
from meap_bench.tasks.mdqa import MdqaConfig, MdqaTask
from meap_bench.tokenization import load_tokenizer

LIM_DIR = SHARED / "data" / "lost-in-the-middle"
needs_shared = pytest.mark.skipif(not (LIM_DIR / lim.ORACLE_FILE).is_file(), reason="../shared/data absent")
DOC = re.compile(r"^Document \[(\d+)\]\(Title: (.*)$", re.M)


def documents(prompt: str) -> list[tuple[int, str, str]]:
    """(index, title, title and text) of each document line (titles of the test files have no ')')."""
    return [(int(i), rest.split(") ", 1)[0], rest) for i, rest in DOC.findall(prompt)]


def write_official(folder: Path, n_questions: int = 3, n_docs: int = 30, gold_index: int = 4) -> Path:
    """A file in the upstream multi-document format: N ctxs with the gold one (isgold) at gold_index."""
    path = folder / f"nq-open-{n_docs}_total_documents_gold_at_{gold_index}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for q in range(n_questions):
            ctxs = [{"title": f"Q{q} distractor {d}", "text": f"Text {d} of question {q}.", "isgold": False,
                     "hasanswer": False} for d in range(1, n_docs)]
            ctxs.insert(gold_index, {"title": f"Q{q} gold", "text": f"The answer to {q} is Answer{q}.",
                                     "isgold": True, "hasanswer": True})
            handle.write(json.dumps({"question": f"question {q}?", "answers": [f"Answer{q}"], "ctxs": ctxs}) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_pair):
    return load_tokenizer(tiny_pair["ntp"])


def test_official_cells_put_gold_at_the_index_with_the_first_distractors(tokenizer, tmp_path):
    write_official(tmp_path)
    config = MdqaConfig(source="nq", data_dir=str(tmp_path), n_docs=[10, 20, 30], positions=[1, 5, 10, 20, 30],
                        questions=3, max_new_tokens=8)
    samples = list(MdqaTask(config, seed=0).samples(ModelContext(tokenizer, 100_000)))
    docs_samples = [s for s in samples if s.cell["setting"] == "documents"]
    assert len(docs_samples) == 3 * (3 + 4 + 5) and all(s.prompt_ids for s in samples)
    for s in docs_samples:
        q, n, k = int(s.sample_id.split("nq")[-1]), s.cell["n_docs"], s.cell["position"]
        docs = documents(s.prompt_text)
        assert [i for i, _, _ in docs] == list(range(1, n + 1))
        titles = [t for _, t, _ in docs]
        assert titles[k - 1] == f"Q{q} gold"
        assert titles[: k - 1] + titles[k:] == [f"Q{q} distractor {d}" for d in range(1, n)]  # first n-1, in order
        gold_ids = tokenizer(f"Document [{k}](", add_special_tokens=False)["input_ids"]
        assert s.prompt_ids[s.target_offset: s.target_offset + 2] == gold_ids[:2]
        assert s.meta["answers"] == [f"Answer{q}"]
    oracle = [s for s in samples if s.cell["setting"] == "oracle"]
    closed = [s for s in samples if s.cell["setting"] == "closed_book"]
    assert [t for _, t, _ in documents(oracle[0].prompt_text)] == ["Q0 gold"]
    assert closed[0].prompt_text.endswith("Question: question 0?\nAnswer:") and "Document" not in closed[0].prompt_text
    assert closed[0].target_offset is None


def test_nq_needs_enough_distractors_and_a_file(tokenizer, tmp_path):
    write_official(tmp_path, n_docs=20, gold_index=0)
    config = MdqaConfig(source="nq", data_dir=str(tmp_path), n_docs=[30], questions=1)
    with pytest.raises(UserError, match="the nq file has 19"):
        list(MdqaTask(config, seed=0).samples(ModelContext(tokenizer, 100_000)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no nq-open-N_total_documents"):
        lim.multidoc_file(empty)


def test_download_failure_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MEAP_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(lim, "REPO_URL", "http://127.0.0.1:9/")  # a closed port: fails at once
    with pytest.raises(UserError, match="could not download .*--set mdqa.data_dir=FOLDER") as err:
        lim.download("nq-open-30_total_documents_gold_at_0.jsonl.gz")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.rglob("*.part"))


@needs_shared
def test_nq_oracle_is_deterministic_answer_free_and_paired(tokenizer):
    config = MdqaConfig(source="nq-oracle", data_dir=str(LIM_DIR), n_docs=[5, 10], questions=6, max_new_tokens=8)
    first = list(MdqaTask(config, seed=3).samples(ModelContext(tokenizer, 100_000)))
    second = list(MdqaTask(config, seed=3).samples(ModelContext(tokenizer, 100_000)))
    assert [s.prompt_ids for s in first] == [s.prompt_ids for s in second]
    other_seed = list(MdqaTask(config, seed=4).samples(ModelContext(tokenizer, 100_000)))
    assert [s.prompt_text for s in other_seed] != [s.prompt_text for s in first]
    questions_per_cell: dict[tuple, set[str]] = {}
    for s in first:
        question = s.prompt_text.rsplit("Question: ", 1)[1].split("\n")[0]
        questions_per_cell.setdefault(tuple(sorted(s.cell.items())), set()).add(question)
        if s.cell["setting"] != "documents":
            continue
        for i, _, title_and_text in documents(s.prompt_text):
            if i != s.cell["position"]:
                text = normalize_answer_lenient(title_and_text)
                assert not any(gold and gold in text for gold in map(normalize_answer_lenient, s.meta["answers"]))
    assert len({frozenset(q) for q in questions_per_cell.values()}) == 1  # the same questions in every cell
    assert len(next(iter(questions_per_cell.values()))) == 6


def test_synthetic_matches_the_training_format(tokenizer):
    config = MdqaConfig(n_docs=[4], positions=[1, 4], questions=2, closed_book=False, oracle=False,
                        synthetic_filler_sentences=2,
                        synthetic_max_sentence_chars=300, max_new_tokens=8)
    samples = list(MdqaTask(config, seed=7).samples(ModelContext(tokenizer, 100_000)))
    assert [s.cell["position"] for s in samples] == [1, 4, 1, 4]
    example = multidoc_example(random.Random("7:mdqa-synthetic:0"), kjv_sentences("heldout"), 4, 1)
    assert samples[0].prompt_text == example["prompt"]  # character for character, gold first
    assert samples[0].target == example["answer"]
    moved = documents(samples[1].prompt_text)
    assert [t for _, t, _ in moved] == [t for t, _ in example["documents"][1:]] + [example["documents"][0][0]]


def test_defaults_follow_the_reference_generation(tokenizer):
    """100 new tokens as the reference; generation may stop at the first line, the only part it scores."""
    config = MdqaConfig(n_docs=[3], questions=1)
    samples = list(MdqaTask(config, seed=0).samples(ModelContext(tokenizer, 100_000)))
    assert samples and all(s.max_new_tokens == 100 and s.stop == ("\n",) for s in samples)
    sample = samples[0]
    answers = sample.meta["answers"]
    scores = MdqaTask(config, seed=0).score(sample, f"Let me think.\n{answers[0]}", [])
    assert scores["best_subspan_em"] == 0.0  # the reference scores the first line only
    scores = MdqaTask(config, seed=0).score(sample, f"It is {answers[0]}.\nMore", [])
    assert scores == {"best_subspan_em": 1.0, "best_subspan_em_lenient": 1.0}


def test_query_aware_prompt_under_a_chat_template(tiny_pair):
    chat = load_tokenizer(tiny_pair["ntp"])
    chat.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    config = MdqaConfig(n_docs=[3], positions=[2], questions=1, closed_book=False, oracle=False, query_aware=True,
                        max_new_tokens=4)
    sample = next(MdqaTask(config, seed=0).samples(ModelContext(chat, 100_000, chat_template=True)))
    question = sample.prompt_text.rsplit("Question: ", 1)[1].split("\n")[0]
    assert sample.prompt_text.startswith("<|user|>Write a high-quality answer")
    assert sample.prompt_text.count(f"Question: {question}") == 2
    assert sample.prompt_text.index(f"Question: {question}") < sample.prompt_text.index("Document [1](")
    assert sample.prompt_text.endswith("<|assistant|>Answer:")
    assert sample.prompt_ids == chat(sample.prompt_text, add_special_tokens=False)["input_ids"]
    start = chat(sample.prompt_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert sample.prompt_text[start[sample.target_offset][0]:].startswith("Document [2](")


@pytest.mark.skipif(not (LLAMA_TOKENIZER / "tokenizer.json").is_file(), reason="../shared/data absent")
@needs_shared
def test_llama_4k_context_skips_30_documents_instead_of_truncating():
    llama = load_tokenizer(LLAMA_TOKENIZER)
    config = MdqaConfig(source="nq-oracle", data_dir=str(LIM_DIR), n_docs=[10, 20, 30], questions=5,
                        max_new_tokens=100)
    samples = list(MdqaTask(config, seed=0).samples(ModelContext(llama, 4096)))
    by_n: dict[int, list] = {}
    for s in samples:
        by_n.setdefault(s.cell["n_docs"], []).append(s)
        if s.prompt_ids is None:
            assert s.meta["prompt_tokens"] + 100 > 4096 and "exceeds the checkpoint's max length 4096" in s.skip_reason
        else:
            assert len(s.prompt_ids) + s.max_new_tokens <= 4096
            assert len(documents(s.prompt_text)) == s.cell["n_docs"] or s.cell["setting"] == "closed_book"
            assert s.prompt_ids == llama(s.prompt_text)["input_ids"]  # the whole prompt, not a cut
    assert all(s.prompt_ids is not None for n in (0, 1, 10, 20) for s in by_n[n])
    thirty = by_n[30]
    assert sum(s.prompt_ids is None for s in thirty) >= len(thirty) // 2
    for q in {s.sample_id.rsplit("-", 1)[1] for s in thirty}:  # a question is skipped at every position or none
        assert len({s.prompt_ids is None for s in thirty if s.sample_id.endswith(f"-{q}")}) == 1


def test_bad_config_is_one_line(checkpoints_yaml, tmp_path, capsys):
    base = ["run", "--tasks", "mdqa", "--checkpoints", str(checkpoints_yaml), "--out", str(tmp_path)]
    assert main([*base, "--set", "mdqa.source=wiki"]) == 2
    err = capsys.readouterr().err.strip()
    assert "mdqa.source" in err and "'synthetic', 'nq' or 'nq-oracle'" in err and "\n" not in err
    assert main([*base, "--set", "mdqa.source=nq", "--set", f"mdqa.data_dir={tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a folder" in err and "\n" not in err


def test_run_writes_curves_heatmaps_and_averaged_tables(checkpoints_yaml, tmp_path, capsys):
    args = ["run", "--tasks", "mdqa", "--checkpoints", str(checkpoints_yaml), "--out", str(tmp_path),
            "--run-name", "m", "--device", "cpu", "--set", "mdqa.n_docs=2,3,40", "--set", "mdqa.questions=2",
            "--set", "mdqa.synthetic_filler_sentences=0", "--set", "mdqa.max_new_tokens=4"]
    assert main(args) == 0
    run_dir = tmp_path / "m"
    records = read_records(run_dir / "records.jsonl")
    assert len(records) == 2 * 2 * (2 + 2 + 3 + 9)  # checkpoints x questions x (baselines + positions)
    skipped = {r.cell["n_docs"] for r in records if r.status == "skipped"}
    assert skipped == {40}  # 40 documents do not fit 512 tokens
    ok = [r for r in records if r.status == "ok" and r.cell["setting"] != "closed_book"]
    assert all(r.target_offset is not None and "answer_logprob" in r.scores for r in ok)
    assert all({"best_subspan_em", "best_subspan_em_lenient"} <= set(r.scores) for r in ok)
    for name in ["mdqa_curves", "mdqa_heatmap_tiny-ntp", "mdqa_pair_tiny"]:
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 0
    for name in ["mdqa_positions", "mdqa_averaged", "mdqa_pairs_averaged", "mdqa_cells"]:
        assert (run_dir / "tables" / f"{name}.md").is_file() and (run_dir / "tables" / f"{name}.csv").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())["tasks"]["mdqa"]
    averaged = {row["checkpoint"]: row for row in summary["averaged"]}
    assert averaged["tiny-ntp"]["40: positions run"] == "0/9"
    settings = {(row["setting"], row["n_docs"]) for row in summary["pairs_averaged"]}
    assert settings == {("closed_book", 0), ("oracle", 1), ("documents", 2), ("documents", 3)}
    assert all(row["n_items"] == 2 and 0 < row["p_value"] <= 1 for row in summary["pairs_averaged"])
    printed = capsys.readouterr().out  # per size and baseline: delta, interval over items, p, items
    for where in ("2 documents, avg over positions", "3 documents, avg over positions", "closed_book", "oracle"):
        assert any(line.startswith(f"  {where} = ") and "(bootstrap over items), p = " in line
                   and "n = 2 items / " in line for line in printed.splitlines()), where
    per_cell = {(row["setting"], row["n_docs"], row["position"]) for row in summary["pairs_cells"]}
    assert len(per_cell) == 2 + 2 + 3 and (run_dir / "tables" / "mdqa_pairs_cells.md").is_file()


def test_band_is_wilson_for_binary_scores_and_normal_otherwise():
    low, high = interval(np.array([1.0, 1.0, 0.0, 0.0]))
    assert round(low, 3) == 0.150 and round(high, 3) == 0.850
    assert interval(np.array([1.0] * 20))[1] == 1.0 and interval(np.array([1.0] * 20))[0] > 0.8
    low, high = interval(np.array([-2.0, -1.0, -3.0]))
    assert round(low, 3) == round(-2 - 1.959964 / 3**0.5, 3) and round(high, 3) == round(-2 + 1.959964 / 3**0.5, 3)
