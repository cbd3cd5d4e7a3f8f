"""Key-value retrieval (lost in the middle): a JSON object of UUID pairs, the queried pair moved to each
position. Cells `{"n_pairs": N, "position": K}`; scored as lost-in-the-middle's
scripts/evaluate_kv_responses.py does (the gold value, case-insensitively, anywhere in the whole output, which
runs to `max_new_tokens` without a stop string), and by the teacher-forced log p(` "value"` | prompt)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from meap_bench.backends.base import LLOutput
from meap_bench.data import lost_in_middle as lim
from meap_bench.errors import UserError
from meap_bench.report_spec import PositionSweep, ReportSpec
from meap_bench.scoring.scorers import teacher_forced
from meap_bench.tasks.base import ModelContext, Sample, Task, encode_prompt
from meap_bench.tasks.positions import (
    AUTO_NEW_TOKENS_SLACK,
    MAX_COUNT,
    IntList,
    PositionConfig,
    Prompt,
    at_most,
    build_group,
    chosen_positions,
    place,
    spread_positions,
)

KV_INSTRUCTION = "Extract the value corresponding to the specified key in the JSON object below."
PROBE_PAIRS = 64
MAX_PAIRS = 10_000


class KvConfig(PositionConfig):
    source: Literal["synthetic", "official"] = "synthetic"
    file: str = "kv-retrieval-75_keys.jsonl.gz"  # official source: kv-retrieval-{75,140,300}_keys.jsonl.gz
    n_pairs: Annotated[IntList, AfterValidator(at_most(MAX_PAIRS, "pairs"))] | Literal["auto"] = "auto"
    auto_pairs: Annotated[int, Field(ge=1, le=100)] = 3
    auto_positions: Annotated[int, Field(ge=1, le=MAX_PAIRS)] = 4
    samples_per_cell: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 20
    instruction: str = KV_INSTRUCTION
    headline_metric: Literal["contains", "answer_greedy"] = "contains"


def render_records(pairs: list[tuple[str, str]]) -> str:
    """The reference rendering: one `"key": "value"` per line inside braces."""
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs]
    return "{" + ",\n ".join(lines) + "}"


class KvTask(Task):
    name = "kv"
    config_model = KvConfig
    config: KvConfig
    report = ReportSpec(axis_labels={"position": "Gold key position", "n_pairs": "Key-value pairs in context"},
                        positions=PositionSweep(size="n_pairs", size_label="key-value pairs",
                                                position_label="Gold key position"))

    def user_text(self, pairs: list[tuple[str, str]], key: str) -> str:
        head = f"{self.config.instruction}\n\n" if self.config.instruction else ""
        query = f"Key: {json.dumps(key)}\n\n" if self.config.query_aware else ""
        return f"{head}{query}JSON data:\n{render_records(pairs)}\n\nKey: {json.dumps(key)}"

    def max_fitting_pairs(self, model: ModelContext) -> int:
        """About the most pairs whose prompt and answer fit the context (a seeded probe's tokens per pair,
        with 5% to spare)."""
        probe = lim.synthetic_kv(1, PROBE_PAIRS - 1, self.seed + 10_000)[0]
        pairs = [(probe.key, probe.value), *probe.distractors]
        empty = len(encode_prompt(model, self.user_text([], probe.key), "Corresponding value:")[1]["input_ids"])
        full = len(encode_prompt(model, self.user_text(pairs, probe.key), "Corresponding value:")[1]["input_ids"])
        per_pair = 1.05 * (full - empty) / len(pairs)
        answer = len(model.tokenizer(f' "{probe.value}"', add_special_tokens=False)["input_ids"])
        new = self.config.max_new_tokens if self.config.max_new_tokens != "auto" else answer + AUTO_NEW_TOKENS_SLACK
        return int((model.max_length - empty - new) / per_pair)

    def sizes(self, model: ModelContext, available: int | None) -> list[int]:
        if self.config.n_pairs != "auto":
            return sorted(set(self.config.n_pairs))
        top = self.max_fitting_pairs(model)
        if available is not None:
            top = min(top, available)
        if top < 2:
            raise UserError(f"kv.n_pairs auto: not even 2 pairs fit the context of {model.max_length} tokens; "
                            f"give kv.n_pairs explicitly to see the skipped cells")
        k = self.config.auto_pairs
        return sorted({max(2, round(top * (i + 1) / k)) for i in range(k)})

    def items(self, largest: int) -> list[lim.KVItem]:
        cfg = self.config
        count = min(cfg.samples_per_cell, self.limit or cfg.samples_per_cell)
        if cfg.source == "synthetic":
            return lim.synthetic_kv(count, largest - 1, self.seed)
        data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else None
        items = lim.load_kv(data_dir, cfg.file)
        return [items[i] for i in lim.pick_indices(len(items), count, self.seed)]

    def samples(self, model: ModelContext) -> Iterator[Sample]:
        cfg = self.config
        available = None
        if cfg.source == "official":
            data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else None
            available = min(len(i.distractors) for i in lim.load_kv(data_dir, cfg.file)) + 1
        sizes = self.sizes(model, available)
        if available is not None and max(sizes) > available:
            raise UserError(f"kv.n_pairs: {max(sizes)} pairs asked but {cfg.file} has {available}; use "
                            f"n_pairs <= {available} or a file with more keys")
        meta = {"source": cfg.source}
        for item in self.items(max(sizes)):
            gold = (item.key, item.value)
            for n in sizes:
                auto = spread_positions(n, cfg.auto_positions)
                group = [Prompt(f"N{n}-P{k}-{item.qid}", item.qid, {"n_pairs": n, "position": k},
                                self.user_text(place(gold, item.distractors, n, k), item.key),
                                "Corresponding value:", f"{json.dumps(item.key)}: {json.dumps(item.value)}",
                                {**meta, "depth": round(100 * (k - 1) / max(n - 1, 1), 2)})
                         for k in chosen_positions(cfg.positions, n, auto, "kv.positions")]
                yield from build_group(model, group, [f'"{item.value}"'], cfg.max_new_tokens, stop=())

    def score(self, sample: Sample, output: str | None, choices: list[LLOutput]) -> dict[str, float]:
        value = sample.target.strip('"')
        scores = {"contains": float(value.lower() in (output or "").lower())}
        return {**scores, **teacher_forced(choices[0] if choices else None)}
