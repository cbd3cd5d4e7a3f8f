"""Needle construction: token-exact fit, depth within one sentence, determinism, skipped cells; the
length-normalised `rank` score."""

from __future__ import annotations

import pytest
from conftest import LLAMA_TOKENIZER

from meap_bench.backends.base import LLOutput
from meap_bench.config import validate
from meap_bench.errors import UserError
from meap_bench.tasks import ModelContext
from meap_bench.tasks.needle import Grid, NeedleConfig, NeedleTask
from meap_bench.tokenization import load_tokenizer

WHO = ["ox", "lamb", "dove", "king", "scribe"]
WHERE = ["gate", "well", "hill"]
TEXT = " ".join(f"Sentence number {i} tells of the {WHO[i % 5]} that walked {i % 7 + 1} miles to the "
                f"{WHERE[i % 3]} by the river." for i in range(200))


@pytest.fixture(scope="module")
def haystack_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hay")
    (folder / "b.txt").write_text(TEXT)
    (folder / "a.txt").write_text("Alpha comes first. It is read before b.txt because files are sorted. ")
    return folder


def build(tokenizer, haystack_dir, max_length, **settings):
    config = NeedleConfig(haystack=f"dir:{haystack_dir}", samples_per_cell=2, **settings)
    return list(NeedleTask(config, seed=0).samples(ModelContext(tokenizer, max_length)))


def check_samples(samples, tokenizer):
    built = [s for s in samples if s.prompt_ids is not None]
    assert built
    for s in built:
        length = s.cell["length"]
        assert len(s.prompt_ids) + s.max_new_tokens <= length
        assert len(s.prompt_ids) + s.max_new_tokens > length - 60  # filled to within about a sentence
        assert s.prompt_ids == tokenizer(s.prompt_text)["input_ids"]
        fact_ids = tokenizer(s.meta["fact"], add_special_tokens=False)["input_ids"]
        window = tokenizer.decode(s.prompt_ids[s.target_offset:s.target_offset + len(fact_ids) + 2])
        assert s.meta["fact"][:20] in window
        sentence_share = 100 * 40 / s.meta["haystack_tokens"]  # a sentence is at most ~40 tokens here
        assert abs(s.meta["depth_actual"] - s.cell["depth"]) <= sentence_share
        assert s.prompt_text.endswith("is") or s.prompt_text.endswith("Francisco is")


def test_bpe_prompts_fit_and_place_the_needle(tiny_pair, haystack_dir):
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    samples = build(tokenizer, haystack_dir, 512, context_lengths=[128, 256, 512], depths=[0, 25, 50, 75, 100])
    check_samples(samples, tokenizer)
    assert len(samples) == 3 * 5 * 2


@pytest.mark.skipif(not LLAMA_TOKENIZER.is_dir(), reason="../shared is absent")
def test_llama_sentencepiece_prompts_fit_and_place_the_needle(haystack_dir):
    tokenizer = load_tokenizer(LLAMA_TOKENIZER)
    samples = build(tokenizer, haystack_dir, 4096, context_lengths=[300, 1000, 2500],
                    depths=Grid(min=0, max=100, intervals=6, spacing="sigmoid"), needle="sandwich")
    check_samples(samples, tokenizer)


def test_prompts_are_identical_across_runs_and_seeded(tiny_pair, haystack_dir):
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    first = build(tokenizer, haystack_dir, 512, context_lengths=[256], depths=[0, 50])
    again = build(load_tokenizer(tiny_pair["ntp"]), haystack_dir, 512, context_lengths=[256], depths=[0, 50])
    assert [s.prompt_sha256 for s in first] == [s.prompt_sha256 for s in again]
    assert len({s.target for s in first}) == 2  # two seeded needles per cell
    other = list(NeedleTask(NeedleConfig(haystack=f"dir:{haystack_dir}", samples_per_cell=2,
                                         context_lengths=[256], depths=[0, 50]), seed=1)
                 .samples(ModelContext(tokenizer, 512)))
    assert [s.target for s in other] != [s.target for s in first]


def test_cells_beyond_max_length_are_skipped_not_truncated(tiny_pair, haystack_dir):
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    samples = build(tokenizer, haystack_dir, 300, context_lengths=[256, 1024], depths=[50])
    skipped = [s for s in samples if s.cell["length"] == 1024]
    assert skipped and all(s.prompt_ids is None and "1024 > checkpoint max length 300" in s.skip_reason
                           for s in skipped)
    tiny = build(tokenizer, haystack_dir, 512, context_lengths=[24], depths=[50])
    assert all(s.prompt_ids is None and "exceeds length 24" in s.skip_reason for s in tiny)


def test_auto_lengths_and_sigmoid_depths():
    task = NeedleTask(NeedleConfig(context_lengths="auto", auto_lengths=4), seed=0)
    assert task.lengths(1024) == [256, 512, 768, 1024]
    depths = Grid(min=0, max=100, intervals=5, spacing="sigmoid").values()
    assert depths[0] == 0 and depths[-1] == 100 and depths[2] == 50
    assert 0 < depths[1] < 25 and 75 < depths[3] < 100


def test_chat_template_wraps_the_question_and_keeps_the_answer_prefix(tiny_pair, haystack_dir):
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    config = NeedleConfig(haystack=f"dir:{haystack_dir}", samples_per_cell=1, context_lengths=[256], depths=[50])
    sample = next(NeedleTask(config, seed=0).samples(ModelContext(tokenizer, 512, chat_template=True)))
    assert sample.prompt_text.startswith("<|user|>Read the text below")
    assert "<|assistant|>Answer: The special magic number for" in sample.prompt_text
    assert len(sample.prompt_ids) + sample.max_new_tokens <= 256
    assert sample.prompt_ids == tokenizer(sample.prompt_text, add_special_tokens=False)["input_ids"]


def test_rank_is_per_token_so_the_longest_gold_can_win(tiny_pair, haystack_dir):
    """The sandwich gold is the longest candidate in tokens: with summed log-probabilities it lost to every
    distractor even when the model preferred it at every token (rank 0 for every model, below chance)."""
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    sample = build(tokenizer, haystack_dir, 512, context_lengths=[256], depths=[50], needle="sandwich")[0]
    gold, *others = (len(ids) for ids in sample.choices)
    assert others and gold > max(others)
    # a model that gives the gold -1.0 nats per token and every distractor -1.2 nats per token
    choices = [LLOutput(-1.0 * gold, False)] + [LLOutput(-1.2 * n, False) for n in others]
    task = NeedleTask(NeedleConfig(needle="sandwich"), seed=0)
    scores = task.score(sample, "", choices)
    assert scores["rank"] == 1.0 and scores["answer_logprob"] == -1.0 * gold  # answer_logprob stays summed
    worse = [LLOutput(-1.3 * gold, False)] + choices[1:]
    assert task.score(sample, "", worse)["rank"] == 0.0


def test_rank_is_omitted_without_distractors(tiny_pair, haystack_dir):
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    sample = build(tokenizer, haystack_dir, 512, context_lengths=[256], depths=[50], distractors=0)[0]
    assert len(sample.choices) == 1
    scores = NeedleTask(NeedleConfig(distractors=0), seed=0).score(sample, "", [LLOutput(-3.0, True)])
    assert "rank" not in scores and scores["answer_greedy"] == 1.0
    with pytest.raises(UserError, match="needle.distractors: 0 is invalid .*rank needs distractors > 0"):
        validate(NeedleConfig, {"headline_metric": "rank", "distractors": 0}, "tasks/needle.yaml", "needle")
