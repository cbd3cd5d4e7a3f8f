"""The hallucination task: seeded sampling and the fit rule, the three judges (the OpenAI-compatible one against a
real chat-completions server on 127.0.0.1), and a whole run with its report."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import build_model

from meap_bench.backends import load_backend
from meap_bench.backends.base import GenRequest
from meap_bench.cli import main
from meap_bench.config import Checkpoint
from meap_bench.errors import UserError
from meap_bench.records import read_records
from meap_bench.scoring.judges import (
    PROMPT_SHA256,
    JudgeItem,
    LexicalJudge,
    LocalJudge,
    OpenAIJudge,
    OpenAISettings,
    parse_verdict,
)
from meap_bench.tasks import ModelContext, load_task_config
from meap_bench.tasks.hallucination import HallucinationTask
from meap_bench.tokenization import load_tokenizer

KEY = "sk-test-NEVER-WRITTEN-5f3a9c"
DOCUMENT = ("The town council of Port Elwin voted on Tuesday to close the old harbour bridge for repairs. Engineers "
            "found rust in two of the four steel supports. The bridge will stay closed for six weeks from 3 March.")


def task_with(tmp_path: Path, rows: list[dict], seed: int = 0, **sets) -> HallucinationTask:
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [("hallucination", "sources", {"mine": {"file": str(data), "max_new_tokens": 8,
                                                        "fields": {"id": "id", "document": "text",
                                                                   "reference": "gold"}}}),
                 ("hallucination", "datasets", ["mine"]), *(("hallucination", k, v) for k, v in sets.items())]
    return HallucinationTask(load_task_config("hallucination", overrides), seed=seed)


def rows_of(n: int, long_every: int = 0) -> list[dict]:
    return [{"id": f"d{i}", "text": ("word " * 300 if long_every and i % long_every == 0 else f"Doc {i} is short."),
             "gold": f"Doc {i}."} for i in range(n)]


def test_same_seed_same_items_and_long_documents_are_replaced(tmp_path, tiny_pair):
    model = ModelContext(load_tokenizer(tiny_pair["ntp"]), max_length=128)
    first = list(task_with(tmp_path, rows_of(30, long_every=3), samples=6).samples(model))
    again = list(task_with(tmp_path, rows_of(30, long_every=3), samples=6).samples(model))
    other = list(task_with(tmp_path, rows_of(30, long_every=3), seed=1, samples=6).samples(model))
    assert [s.sample_id for s in first] == [s.sample_id for s in again]
    assert [s.sample_id for s in first] != [s.sample_id for s in other]
    assert len(first) == 6 and all(s.prompt_ids is not None for s in first)
    assert all(len(s.prompt_ids) + s.max_new_tokens <= 128 for s in first)
    replaced = [s.meta["replaced_from"] for s in first if s.meta["replaced_from"]]
    assert replaced and all(int(r.removeprefix("mine-d")) % 3 == 0 for r in replaced)  # the long ones, named
    assert not any(int(s.item_id.removeprefix("mine-d")) % 3 == 0 for s in first)
    assert [s.meta["draw"] for s in first] == sorted(s.meta["draw"] for s in first)


def test_too_long_documents_without_replacement_are_skipped_not_truncated(tmp_path, tiny_pair):
    model = ModelContext(load_tokenizer(tiny_pair["ntp"]), max_length=128)
    samples = list(task_with(tmp_path, rows_of(4, long_every=2), samples=4).samples(model))
    assert sorted(s.sample_id for s in samples if s.prompt_ids is None) == ["mine-d0", "mine-d2"]
    assert all("> 128 and no more documents that fit" in s.skip_reason for s in samples if s.prompt_ids is None)


def test_the_judge_is_part_of_the_request_hash(tmp_path, tiny_pair):
    model = ModelContext(load_tokenizer(tiny_pair["ntp"]), max_length=512)
    a = next(task_with(tmp_path, rows_of(3)).samples(model))
    b = next(task_with(tmp_path, rows_of(3), lexical={"threshold": 0.5}).samples(model))
    assert a.prompt_ids == b.prompt_ids and a.request_sha256 != b.request_sha256


def test_hub_source_offline_is_a_one_line_user_error(tiny_pair):
    overrides = [("hallucination", "datasets", ["xsum"])]
    task = HallucinationTask(load_task_config("hallucination", overrides), seed=0)
    with pytest.raises(UserError, match=r"cannot load EdinburghNLP/xsum .*--set hallucination.sources.xsum.file="):
        list(task.samples(ModelContext(load_tokenizer(tiny_pair["ntp"]), 512)))


# the columns of each hub source as its dataset card lists them (XSum, CNN/DailyMail, WikiSum, LongBench's copies of
# Multi-News, Qasper, HotpotQA and 2WikiMultihopQA), and which column is the document, the reference, the question
HUB_COLUMNS = {
    "EdinburghNLP/xsum": (["document", "summary", "id"], "document", "summary", None),
    "abisee/cnn_dailymail": (["article", "highlights", "id"], "article", "highlights", None),
    "d0rj/wikisum": (["url", "title", "summary", "article", "step_headers"], "article", "summary", None),
    "zai-org/LongBench": (["input", "context", "answers", "length", "dataset", "language", "all_classes", "_id"],
                          "context", "answers", "input"),
}


def hub_mirror(folder: Path, config: str | None, columns: list[str]) -> Path:
    """A local dataset folder laid out as the hub repo is (one Parquet file per config and split), read by the same
    `datasets.load_dataset` call as the hub."""
    import pandas as pd

    rows = [{c: [f"answer {i}"] if c == "answers" else i if c == "length" else f"{c} {i}" for c in columns}
            for i in range(3)]
    where = folder / (config or "data")
    where.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(where / "test-00000-of-00001.parquet")
    if config:
        (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: test\n"
                                          f"    path: {config}/test-*\n---\n")
    return folder


def test_every_hub_source_maps_the_real_columns_through_datasets(tmp_path):
    """Each hub source of tasks/hallucination.yaml, its id, config, split and fields unchanged, read from a local
    mirror with the dataset card's columns: the right column becomes document, reference and question."""
    config = load_task_config("hallucination", [])
    hub_sources = {name: s for name, s in config.sources.items() if s.hub}
    assert set(hub_sources) == {"xsum", "cnn_dailymail", "multi_news", "wikisum", "qasper", "hotpotqa",
                                "2wikimultihopqa"}
    for name, source in hub_sources.items():
        columns, document, reference, question = HUB_COLUMNS[source.hub]
        assert source.split == "test", name
        mirror = hub_mirror(tmp_path / name, source.config, columns)
        overrides = [("hallucination", f"sources.{name}.hub", str(mirror)), ("hallucination", "datasets", [name])]
        items = HallucinationTask(load_task_config("hallucination", overrides), seed=0).source_items(name)
        assert [i.document for i in items] == [f"{document} {i}" for i in range(3)], name
        assert [i.reference for i in items] == [f"{reference} {i}" if reference != "answers" else f"answer {i}"
                                                for i in range(3)], name
        if source.prompt == "qa":
            assert [i.question for i in items] == [f"{question} {i}" for i in range(3)], name
        assert len({i.item_id for i in items}) == 3 and not {i.item_id for i in items} & {"0", "1", "2"}, name


def test_lexical_proxy_on_faithful_and_unfaithful_outputs():
    judge = LexicalJudge(threshold=0.8)
    outputs = ["Port Elwin's harbour bridge will close for six weeks from 3 March after engineers found rust.",
               "The council closed the harbour bridge for repairs.",
               "Port Elwin's harbour bridge will close for ten weeks after a storm damaged it in 2019.",
               "Mayor Jones opened a new bridge in Carrow."]
    verdicts = judge.judge([JudgeItem(DOCUMENT, "ref", o) for o in outputs] + [JudgeItem(DOCUMENT, "ref", " ")])
    assert [v.faithful for v in verdicts] == [True, True, False, False, None]
    assert {"ten", "storm", "damaged", "2019"} <= set(verdicts[2].spans)
    assert verdicts[4].reason == "empty output"
    assert judge.identity["proxy"] is True


@pytest.mark.parametrize(("raw", "expected"), [
    ('Problematic spans: none\nConclusion: True', (True, [])),
    ('Problematic spans: ["ten weeks", "a storm"]\n**Conclusion: False**', (False, ["ten weeks", "a storm"])),
    ("Conclusion: true.", (True, [])), ("False", (False, [])), ("conclusion - Unfaithful", (False, [])),
    ("Conclusion: False\n...on reflection\nConclusion: True", (True, [])),
    ("The summary looks mostly fine.", (None, [])), ("Conclusion: maybe", (None, [])), ("", (None, [])),
])
def test_verdict_parsing(raw, expected):
    assert parse_verdict(raw) == expected


class ChatServer:
    """A real chat-completions endpoint on 127.0.0.1: answers by the proposed output in the prompt, after
    playing a script of faults (`"429"`, `"500"`, `"slow"`), and keeps every request it saw."""

    ANSWERS = {"OUTPUT-TRUE": 'Problematic spans: none\nConclusion: True',
               "OUTPUT-FALSE": 'Problematic spans: ["ten weeks"]\nConclusion: False',
               "OUTPUT-GARBLED": "I cannot decide."}

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body})
                fault = server.script.pop(0) if server.script else None
                if fault == "slow":
                    time.sleep(1.5)
                if fault in ("429", "500"):
                    self.reply(int(fault), {"error": {"message": "injected", "type": "server_error"}})
                    return
                prompt = body["messages"][-1]["content"]
                proposed = prompt.split("Proposed summary:\n", 1)[-1]
                text = next((a for k, a in server.ANSWERS.items() if k in proposed), "Conclusion: True")
                self.reply(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})

            def reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "20")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def settings(server: ChatServer, cache: Path, **changes) -> OpenAISettings:
    values = dict(base_url=server.url, model="gpt-4o", api_key_env="MEAP_TEST_JUDGE_KEY", timeout=0.5,
                  max_retries=4, concurrency=4, max_tokens=64, usd_per_mtok_in=2.5, usd_per_mtok_out=10.0,
                  cache=cache)
    return OpenAISettings(**{**values, **changes})


def test_openai_judge_request_parsing_retries_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEAP_TEST_JUDGE_KEY", KEY)
    items = [JudgeItem(DOCUMENT, "The bridge closes.", f"Bridge closes. OUTPUT-{k}") for k in
             ("TRUE", "FALSE", "GARBLED")]
    with ChatServer() as server:
        server.script = ["429", "500", "slow"]  # one each, before the first answer
        judge = OpenAIJudge(settings(server, tmp_path / "cache.sqlite", concurrency=1))
        verdicts = judge.judge(items)
        assert [v.faithful for v in verdicts] == [True, False, None]
        assert verdicts[1].spans == ["ten weeks"] and verdicts[2].reason == "unparsable judge answer"
        assert verdicts[2].raw == "I cannot decide."
        assert len(server.requests) == 3 + 3  # three faults retried, then one request per item
        first = server.requests[0]
        assert first["path"] == "/v1/chat/completions"
        assert first["headers"]["authorization"] == f"Bearer {KEY}"
        body = first["body"]
        assert body["model"] == "gpt-4o" and body["temperature"] == 0 and body["messages"][0]["role"] == "user"
        assert DOCUMENT in body["messages"][0]["content"] and "Conclusion: True" in body["messages"][0]["content"]
        assert verdicts[0].metadata == {"judge_tokens": {"prompt": 100, "completion": 10}, "judge_usd": 0.00035,
                                        "judge_cached": False}

        again = OpenAIJudge(settings(server, tmp_path / "cache.sqlite")).judge(items)  # a rerun pays nothing
        assert len(server.requests) == 6
        assert [v.faithful for v in again] == [True, False, None] and all(v.metadata["judge_cached"] for v in again)
        other = OpenAIJudge(settings(server, tmp_path / "cache.sqlite", model="other-judge")).judge(items[:1])
        assert len(server.requests) == 7 and other[0].metadata["judge_cached"] is False
    assert KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_openai_judge_that_keeps_failing_is_unjudged_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MEAP_TEST_JUDGE_KEY", KEY)
    with ChatServer() as server:
        server.script = ["500"] * 3
        judge = OpenAIJudge(settings(server, tmp_path / "cache.sqlite", max_retries=2))
        [verdict] = judge.judge([JudgeItem(DOCUMENT, "ref", "OUTPUT-TRUE")])
        assert verdict.faithful is None and "HTTP 500" in verdict.reason and len(server.requests) == 3
        [verdict] = judge.judge([JudgeItem(DOCUMENT, "ref", "OUTPUT-TRUE")])
        assert verdict.faithful is True and len(server.requests) == 4


def test_openai_judge_without_key_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MEAP_TEST_JUDGE_KEY", raising=False)
    with ChatServer() as server, pytest.raises(UserError, match="MEAP_TEST_JUDGE_KEY holds no API key"):
        OpenAIJudge(settings(server, tmp_path / "cache.sqlite"))


def test_local_judge_answers_through_our_backend(tiny_pair, tmp_path):
    path = build_model(tmp_path / "judge", load_tokenizer(tiny_pair["ntp"]), 448, seed=3, max_positions=1024)
    checkpoint = Checkpoint(name="judge", path=str(path))
    backend = load_backend(checkpoint, "hf", "cpu")
    judge = LocalJudge(checkpoint, backend, max_new_tokens=6)
    items = [JudgeItem("The fox jumps.", "A fox jumps.", "The fox jumps."), JudgeItem("word " * 800, "r", "o"),
             JudgeItem("The fox.", "A fox.", "")]
    verdicts = judge.judge(items)
    [expected] = backend.generate([GenRequest(judge.encode(items[0].prompt()), 6, ())])
    assert expected.text and verdicts[0].raw == expected.text
    assert verdicts[0].faithful == parse_verdict(expected.text)[0]
    assert verdicts[1].faithful is None and "> judge context 1024" in verdicts[1].reason
    assert verdicts[2].reason == "empty output"
    assert judge.identity["fingerprint"] == backend.fingerprint and judge.identity["prompt_sha256"] == PROMPT_SHA256


def run_args(checkpoints_yaml: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["run", "--tasks", "hallucination", "--checkpoints", str(checkpoints_yaml), "--out", str(out),
            "--run-name", name, "--device", "cpu", "--limit", "3", *extra]


def test_run_with_the_lexical_judge_writes_records_table_and_figure(checkpoints_yaml, tmp_path, capsys):
    assert main(run_args(checkpoints_yaml, tmp_path, "lex")) == 0
    run_dir = tmp_path / "lex"
    records = read_records(run_dir / "records.jsonl")
    assert len(records) == 2 * 2 * 3 and {r.cell["dataset"] for r in records} == {"local-summary", "local-qa"}
    for record in records:
        assert record.meta["verdict"] in {"faithful", "unfaithful", "unjudged"} and record.output is not None
        assert record.meta["judge"]["judge"] == "lexical" and "judge_raw" in record.meta
        assert ("faithful" in record.scores) == (record.meta["verdict"] != "unjudged")
    ntp = {r.item_id for r in records if r.checkpoint == "tiny-ntp"}
    assert ntp == {r.item_id for r in records if r.checkpoint == "tiny-meap"}  # the same items for both
    table = (run_dir / "tables" / "hallucination_faithful.md").read_text()
    assert "lexical proxy" in table and "average" in table and "ci95_low" in table
    assert "average" in (run_dir / "tables" / "hallucination_pairs_by_dataset.md").read_text()
    assert (run_dir / "figures" / "hallucination_faithful.png").stat().st_size > 0
    summary = json.loads((run_dir / "summary.json").read_text())["tasks"]["hallucination"]
    assert summary["judge"].startswith("lexical proxy")
    assert main(run_args(checkpoints_yaml, tmp_path, "lex")) == 0  # resumed: nothing judged again
    assert len(read_records(run_dir / "records.jsonl")) == len(records)


def test_run_with_the_openai_judge_never_writes_the_key(checkpoints_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEAP_TEST_JUDGE_KEY", KEY)
    monkeypatch.setenv("MEAP_BENCH_CACHE", str(tmp_path / "cache"))
    with ChatServer() as server:
        extra = ["--set", "hallucination.judge=openai", "--set", f"hallucination.openai.base_url={server.url}",
                 "--set", "hallucination.openai.api_key_env=MEAP_TEST_JUDGE_KEY",
                 "--set", "hallucination.datasets=local-summary",
                 "--set", "hallucination.sources.local-summary.stop=[]"]
        server.script = ["500"]  # with no retries left: one verdict is lost this run, not recorded as anything
        no_retry = ["--set", "hallucination.openai.max_retries=0"]
        assert main(run_args(checkpoints_yaml, tmp_path, "oa", *extra, *no_retry)) == 0
        assert len(read_records(tmp_path / "oa" / "records.jsonl")) == 5
        assert "1 samples not recorded because their scorer could not finish (judge request failed: " \
               "InternalServerError (HTTP 500))" in capsys.readouterr().err
        assert main(run_args(checkpoints_yaml, tmp_path, "oa", *extra, *no_retry)) == 0  # the rerun finishes it
        asked = len(server.requests)
        assert asked == 1 + 6  # the failed request, then 3 items x 2 checkpoints, each asked once
        records = read_records(tmp_path / "oa" / "records.jsonl")
        assert len(records) == 6
        assert all(r.meta["judge"]["model"] == "gpt-4o" and r.meta["judge_raw"] == "Conclusion: True"
                   for r in records)
        assert main(run_args(checkpoints_yaml, tmp_path, "oa2", *extra, *no_retry)) == 0  # the cache answers
        assert len(server.requests) == asked
    assert "gpt-4o judge" in (tmp_path / "oa" / "tables" / "hallucination_faithful.md").read_text()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "judge_cache.sqlite" for p in written)
    assert not [p for p in written if KEY.encode() in p.read_bytes()]


def test_bad_dataset_settings_are_one_line_user_errors(tmp_path, tiny_pair):
    with pytest.raises(UserError, match=r"hallucination.datasets: \"nope\" is invalid .*no source 'nope'"):
        load_task_config("hallucination", [("hallucination", "datasets", "nope")])
    task = task_with(tmp_path, [{"id": "a", "body": "x", "gold": "y"}])
    with pytest.raises(UserError, match=r"row 0 has no field 'text' \(mapped to document\).*fields.document=FIELD"):
        list(task.samples(ModelContext(load_tokenizer(tiny_pair["ntp"]), 512)))
