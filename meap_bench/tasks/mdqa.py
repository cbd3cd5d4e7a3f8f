"""Multi-document QA ("lost in the middle"): the same questions with the gold document at each position
among N documents, plus closed-book (no documents) and oracle (gold document only) baselines.

Cells: `{"setting": "documents", "n_docs": N, "position": K}`, `{"setting": "closed_book", "n_docs": 0,
"position": 0}` and `{"setting": "oracle", "n_docs": 1, "position": 1}`. Scored by best-subspan exact
match on the first output line (the reference's, and a unicode-lenient variant) and by the teacher-forced
log p(first gold answer | prompt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveInt

from meap_bench.backends.base import LLOutput
from meap_bench.data import lost_in_middle as lim
from meap_bench.data.synthetic import MULTIDOC_INSTRUCTION
from meap_bench.errors import UserError
from meap_bench.report_spec import PositionSweep, ReportSpec
from meap_bench.scoring import best_subspan_em, best_subspan_em_lenient
from meap_bench.scoring.scorers import teacher_forced
from meap_bench.tasks.base import ModelContext, Sample, Task
from meap_bench.tasks.positions import (
    MAX_COUNT,
    IntList,
    PositionConfig,
    Prompt,
    at_most,
    build_group,
    chosen_positions,
    paper_positions,
    place,
)

MAX_DOCS = 1000  # distinct made-up entities are drawn until a prompt has this many
AXIS_LABELS = {"position": "Gold document position", "n_docs": "Documents in context"}



class MdqaConfig(PositionConfig):
    source: Literal["synthetic", "nq", "nq-oracle"] = "synthetic"
    n_docs: Annotated[IntList, AfterValidator(at_most(MAX_DOCS, "documents"))] = Field(
        default_factory=lambda: [5, 10, 20])
    questions: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 20
    closed_book: bool = True
    oracle: bool = True
    instruction: str = MULTIDOC_INSTRUCTION
    synthetic_filler_sentences: int = Field(default=1, ge=0)
    synthetic_max_sentence_chars: PositiveInt = 80
    headline_metric: Literal["best_subspan_em", "answer_greedy"] = "best_subspan_em"


def render_document(index: int, doc: lim.Passage) -> str:
    return f"Document [{index}](Title: {doc.title}) {doc.text}"


def render_documents(docs: list[lim.Passage]) -> str:
    return "\n".join(render_document(i, d) for i, d in enumerate(docs, start=1))


class MdqaTask(Task):
    name = "mdqa"
    config_model = MdqaConfig
    config: MdqaConfig
    report = ReportSpec(axis_labels=AXIS_LABELS, positions=PositionSweep(size="n_docs", size_label="documents",
                                                                         position_label="Gold document position"))

    def items(self) -> list[lim.QAItem]:
        """The questions (the same in every cell), each with enough distractors for the largest cell."""
        cfg = self.config
        count = min(cfg.questions, self.limit or cfg.questions)
        need = max(cfg.n_docs) - 1
        data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else None
        if cfg.source == "synthetic":
            return lim.synthetic_qa(count, need, self.seed, cfg.synthetic_filler_sentences,
                                    cfg.synthetic_max_sentence_chars)
        if cfg.source == "nq-oracle":
            total = len(lim.oracle_rows(data_dir))
            return lim.load_nq_oracle(data_dir, need, self.seed, lim.pick_indices(total, count, self.seed))
        items = lim.load_nq(data_dir)
        have = min(len(item.distractors) for item in items)
        if need > have:
            raise UserError(f"mdqa.n_docs: {need + 1} documents need {need} distractors but the nq file has "
                            f"{have}; use n_docs <= {have + 1} or a file with more documents")
        return [items[i] for i in lim.pick_indices(len(items), count, self.seed)]

    def user_text(self, question: str, docs: list[lim.Passage] | None) -> str:
        if docs is None:  # closed book, as in the reference closed-book prompt
            return f"Question: {question}"
        head = f"{self.config.instruction}\n\n" if self.config.instruction else ""
        query = f"Question: {question}\n\n" if self.config.query_aware else ""
        return f"{head}{query}{render_documents(docs)}\n\nQuestion: {question}"

    def spans(self, question: str, docs: list[lim.Passage], position: int) -> dict[str, str]:
        """The parts whose token ranges are recorded: gold document, all documents, instruction, question."""
        parts = {"target": render_document(position, docs[position - 1]), "context": render_documents(docs),
                 "question": f"Question: {question}"}
        return {**parts, "instruction": self.config.instruction} if self.config.instruction else parts

    def samples(self, model: ModelContext) -> Iterator[Sample]:
        cfg = self.config
        meta = {"source": cfg.source}
        for item in self.items():
            groups: list[list[Prompt]] = []
            if cfg.closed_book:
                groups.append([Prompt(f"closed-{item.qid}", item.qid,
                                      {"setting": "closed_book", "n_docs": 0, "position": 0},
                                      self.user_text(item.question, None), "Answer:", None, meta,
                                      {"question": f"Question: {item.question}"})])
            if cfg.oracle:
                groups.append([Prompt(f"oracle-{item.qid}", item.qid,
                                      {"setting": "oracle", "n_docs": 1, "position": 1},
                                      self.user_text(item.question, [item.gold]), "Answer:",
                                      "Document [1](", meta, self.spans(item.question, [item.gold], 1))])
            for n in sorted(set(cfg.n_docs)):
                group = []
                for k in chosen_positions(cfg.positions, n, paper_positions(n), "mdqa.positions"):
                    docs = place(item.gold, item.distractors, n, k)
                    group.append(Prompt(f"N{n}-P{k}-{item.qid}", item.qid,
                                        {"setting": "documents", "n_docs": n, "position": k},
                                        self.user_text(item.question, docs), "Answer:", f"Document [{k}](", meta,
                                        self.spans(item.question, docs, k)))
                groups.append(group)
            for group in groups:
                yield from build_group(model, group, item.answers, cfg.max_new_tokens)

    def score(self, sample: Sample, output: str | None, choices: list[LLOutput]) -> dict[str, float]:
        answers = sample.meta.get("answers") or [sample.target]
        scores = {"best_subspan_em": best_subspan_em(output or "", answers),
                  "best_subspan_em_lenient": best_subspan_em_lenient(output or "", answers)}
        return {**scores, **teacher_forced(choices[0] if choices else None)}
