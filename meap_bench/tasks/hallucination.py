"""Contextual hallucination (the protocol of Lookback-Lens and the DIFF Transformer paper, as MEAP reports it):
the model summarises a document, or answers a question from it; a judge decides whether the output is fully
supported by the document; the metric is the share judged faithful, per dataset.

Cells: `{"dataset": NAME}`. Items are drawn per dataset in a seeded order (the same for every checkpoint); a
document whose prompt + generation does not fit the checkpoint's context is replaced by the next drawn one that
fits (`meta.replaced_from` names it), never truncated. Scores: `faithful` 1/0, absent when the judge gave no
verdict (`meta.verdict = "unjudged"`, with the reason); the record keeps the output, the judge's raw answer and
the parsed verdict."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationInfo, field_validator, model_validator

from meap_bench.backends.base import LLOutput
from meap_bench.config import OneOrMore, Strict
from meap_bench.data.documents import DocItem, load_items
from meap_bench.errors import UserError
from meap_bench.report_spec import Bars, ReportSpec
from meap_bench.scoring.judges import Judge, JudgeItem, LexicalJudge, LocalJudge, OpenAIJudge, OpenAISettings
from meap_bench.scoring.scorers import Score
from meap_bench.tasks.base import ModelContext, Sample, Task, TaskConfig, encode_prompt

# generation prompts (user text, answer prefix) in the style of the reference protocol
PROMPTS = {
    "one_sentence": ("Summarize the following article in one sentence.\n\nArticle: {document}", "Summary:"),
    "summary": ("Summarize the following document.\n\nDocument: {document}", "Summary:"),
    "qa": ("Answer the question using only the document below. Answer concisely.\n\nDocument: {document}\n\n"
           "Question: {question}", "Answer:"),
}
BUNDLED = "tasks/hallucination/local.jsonl"


class Source(Strict):
    """One dataset: a hub id (+ config, split, revision) loaded with `datasets`, or a local .json/.jsonl file."""

    hub: str | None = None
    config: str | None = None
    split: str = "test"
    revision: str | None = None  # a hub branch: refs/convert/parquet for a dataset whose main is a loading script
    file: str | None = None
    fields: dict[str, str] = Field(default_factory=lambda: {"document": "document", "reference": "summary"})
    prompt: Literal["one_sentence", "summary", "qa"] = "summary"
    max_new_tokens: PositiveInt = 64
    stop: OneOrMore[str] = Field(default_factory=lambda: ["\n"])

    @model_validator(mode="after")
    def one_origin(self) -> Source:
        if (self.hub is None) == (self.file is None):
            raise ValueError("give exactly one of hub (a datasets id) and file (a local .json/.jsonl)")
        missing = {"document", "reference"} - set(self.fields)
        if missing:
            raise ValueError(f"fields must map {', '.join(sorted(missing))} to the source's field names")
        if self.prompt == "qa" and "question" not in self.fields:
            raise ValueError("prompt qa needs fields.question")
        return self


def bundled_sources() -> dict[str, Source]:
    return {
        "local-summary": Source(file=BUNDLED, fields={"id": "id", "document": "document", "reference": "summary"},
                                prompt="one_sentence", max_new_tokens=48),
        "local-qa": Source(file=BUNDLED, fields={"id": "id", "document": "document", "question": "question",
                                                  "reference": "answer"}, prompt="qa", max_new_tokens=24),
    }


class LexicalSettings(Strict):
    threshold: float = Field(default=0.8, ge=0, le=1)


class OpenAIConfig(Strict):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; the key itself is never written
    timeout: PositiveFloat = 60.0
    max_retries: NonNegativeInt = 6  # the client's exponential backoff on 429, 5xx, timeouts
    concurrency: PositiveInt = 8
    max_tokens: PositiveInt = 512
    usd_per_mtok_in: float = 2.5
    usd_per_mtok_out: float = 10.0
    cache: str | None = None  # sqlite file of paid verdicts (null: judge_cache.sqlite in the meap_bench cache)


class LocalJudgeConfig(Strict):
    checkpoint: str | None = None  # a name in `checkpoints`
    checkpoints: str = "checkpoints.yaml"
    device: str = "auto"
    max_new_tokens: PositiveInt = 128


class HallucinationConfig(TaskConfig):
    sources: dict[str, Source] = Field(default_factory=bundled_sources)  # before datasets, which are checked on it
    datasets: OneOrMore[str] = Field(default_factory=lambda: ["local-summary", "local-qa"])
    samples: PositiveInt = 100
    judge: Literal["lexical", "openai", "local"] = "lexical"
    lexical: LexicalSettings = Field(default_factory=LexicalSettings)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    local: LocalJudgeConfig = Field(default_factory=LocalJudgeConfig)
    headline_metric: Literal["faithful"] = "faithful"

    @field_validator("datasets")
    @classmethod
    def known_datasets(cls, datasets: list[str], info: ValidationInfo) -> list[str]:
        sources = info.data.get("sources", {})
        unknown = [d for d in datasets if d not in sources]
        if unknown:
            raise ValueError(f"no source '{unknown[0]}' (known: {', '.join(sources)}); add it under sources")
        return datasets


def resolve(path: str) -> Path:
    """A relative path: from the current directory, else from the checkout that ships the bundled data."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    shipped = Path(__file__).resolve().parents[2] / candidate
    return shipped if shipped.exists() else candidate


@cache
def make_judge(config_json: str) -> Judge:
    """One judge per judge config in a process (a local judge's weights load once for every checkpoint)."""
    cfg = HallucinationConfig.model_validate_json(config_json)
    if cfg.judge == "lexical":
        return LexicalJudge(cfg.lexical.threshold)
    if cfg.judge == "openai":
        from meap_bench.data.cache import cache_dir

        o = cfg.openai
        where = resolve(o.cache) if o.cache else cache_dir() / "judge_cache.sqlite"
        return OpenAIJudge(OpenAISettings(o.base_url, o.model, o.api_key_env, o.timeout, o.max_retries,
                                          o.concurrency, o.max_tokens, o.usd_per_mtok_in, o.usd_per_mtok_out, where))
    from meap_bench.backends import load_backend
    from meap_bench.config import load_checkpoints

    local = cfg.local
    checkpoints = {c.name: c for c in load_checkpoints(resolve(local.checkpoints))}
    if local.checkpoint not in checkpoints:
        raise UserError(f"hallucination.local.checkpoint: '{local.checkpoint}' is not in {local.checkpoints} "
                        f"(there: {', '.join(checkpoints)}); set --set hallucination.local.checkpoint=NAME")
    checkpoint = checkpoints[local.checkpoint]
    return LocalJudge(checkpoint, load_backend(checkpoint, "hf", local.device), local.max_new_tokens)


def judge_label(config: dict[str, Any]) -> str:
    """How the judge is named in tables and figures: the lexical one always as a proxy."""
    judge = config.get("judge", "lexical")
    if judge == "lexical":
        return "lexical proxy (not an LLM judge)"
    if judge == "openai":
        return f"{config.get('openai', {}).get('model', 'gpt-4o')} judge"
    return f"local judge {config.get('local', {}).get('checkpoint')}"


class HallucinationTask(Task):
    name = "hallucination"
    config_model = HallucinationConfig
    config: HallucinationConfig

    @classmethod
    def report_spec(cls, config: dict[str, Any]) -> ReportSpec:
        """Share judged faithful per dataset as bars with intervals, the judge named (the lexical one as a proxy)."""
        return ReportSpec(bars=Bars(group="dataset", metric="faithful", judge=judge_label(config)))

    def __init__(self, config: HallucinationConfig, seed: int, limit: int | None = None) -> None:
        super().__init__(config, seed, limit)
        self.items: dict[str, DocItem] = {}

    @property
    def judge(self) -> Judge:
        return make_judge(self.config.model_dump_json())

    def source_items(self, name: str) -> list[DocItem]:
        source = self.config.sources[name]
        return load_items(f"hallucination.sources.{name}", source.fields,
                          resolve(source.file) if source.file else None, source.hub, source.config, source.split,
                          source.revision)

    def samples(self, model: ModelContext) -> Iterator[Sample]:
        count = min(self.config.samples, self.limit or self.config.samples)
        identity = self.judge.identity
        for name in self.config.datasets:
            yield from self.dataset_samples(model, name, count, identity)

    def dataset_samples(self, model: ModelContext, name: str, count: int, identity: dict[str, Any]
                        ) -> Iterator[Sample]:
        """`count` items in the seeded draw order, each too-long document replaced by the next that fits."""
        source = self.config.sources[name]
        items = self.source_items(name)
        order = list(range(len(items)))
        random.Random(f"hallucination/{name}/{self.seed}").shuffle(order)
        template, prefix = PROMPTS[source.prompt]
        waiting: deque[str] = deque()  # drawn among the first `count` but too long: replaced by later fitting ones
        taken = 0
        for draw, index in enumerate(order):
            if taken == count:
                return
            item = items[index]
            text, enc = encode_prompt(model, template.format(document=item.document, question=item.question),
                                      prefix)
            ids = list(enc["input_ids"])
            sample_id = f"{name}-{item.item_id}"
            if len(ids) + source.max_new_tokens > model.max_length:
                if draw < count:
                    waiting.append(sample_id)
                continue
            replaced = waiting.popleft() if draw >= count and waiting else None
            meta = {"dataset": name, "seed": self.seed, "draw": draw, "replaced_from": replaced}
            self.items[sample_id] = item
            yield Sample(sample_id, {"dataset": name}, item.reference, prompt_text=text, prompt_ids=ids,
                         max_new_tokens=source.max_new_tokens, stop=tuple(source.stop), meta=meta, scorer=identity)
            taken += 1
        reason = (f"prompt + {source.max_new_tokens} generated tokens > {model.max_length} and no more documents "
                  f"that fit to replace it")
        for sample_id in waiting:  # too long, and nothing left to replace them
            yield Sample(sample_id, {"dataset": name}, "", skip_reason=reason, meta={"dataset": name})

    def score_batch(self, samples: list[Sample], outputs: list[str | None], choices: list[list[LLOutput]]
                    ) -> list[Score]:
        items = [self.items[s.sample_id] for s in samples]
        verdicts = self.judge.judge([JudgeItem(i.document, i.reference, o or "", i.question)
                                     for i, o in zip(items, outputs, strict=True)])
        judge = self.judge.identity
        scores = []
        for verdict in verdicts:
            label = {True: "faithful", False: "unfaithful", None: "unjudged"}[verdict.faithful]
            meta = {"verdict": label, "judge_raw": verdict.raw, "judge": judge, "problematic_spans": verdict.spans,
                    **verdict.metadata}
            if verdict.faithful is None:
                meta["unjudged"] = True
            values = {} if verdict.faithful is None else {"faithful": float(verdict.faithful)}
            scores.append(Score(values, verdict.reason, meta, final=verdict.final))
        return scores

    def score(self, sample: Sample, output: str | None, choices: list[LLOutput]) -> dict[str, float]:
        return self.score_batch([sample], [output], [choices])[0].values
