"""Byte-level BPE tokenizer for the default pair, trained on the KJV training split.

`[MASK]` is declared as a special token at training time (declared later, "a [MASK] b" would tokenise
with a stray space). Numbers are split left to right into groups of up to `digits` digits (three in Llama-3 and
GPT-4 tokenizers), and every such group (`0`-`999` for three) is one token: with two, as in the default
pair, a 7-digit needle value is four tokens (`12`, `34`, `56`, `7`). With three, the default pair's NTP twin
never learnt to copy those 1,000 rare tokens (docs/default-pair.md); with one, neither twin retrieved.
Every encoded text starts with `<|endoftext|>` (BOS, also EOS); `<|pad|>` pads.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from meap_bench.errors import UserError
from meap_bench.tokenization import MASK_TOKEN

BOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIALS = [BOS, PAD, MASK_TOKEN]


def digit_groups(digits: int = 3) -> list[str]:
    """Every group of 1..`digits` digits, with leading zeros: 0..9, 00..99, 000..999 for 3."""
    return [str(n).zfill(width) for width in range(1, digits + 1) for n in range(10**width)]


def digit_token_ids(tokenizer) -> set[int]:
    """Ids of the number tokens (`7`, `41`, `833`, with or without a leading space) of an HF or `tokenizers`
    tokenizer."""
    return {i for token, i in tokenizer.get_vocab().items() if token.lstrip("Ġ").isdigit()}


def _digit_group_texts(digits: int, seed: int = 0, copies: int = 64) -> Iterator[str]:
    """Lines holding every digit group `copies` times in shuffled order, so BPE merges make each one a
    token (numbers are rare in the KJV). The pre-tokenizer isolates groups, so these merges never touch
    words."""
    groups = digit_groups(digits) * copies
    random.Random(seed).shuffle(groups)
    for i in range(0, len(groups), 64):
        yield " ".join(groups[i : i + 64])


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | Path, digits: int = 3
) -> PreTrainedTokenizerFast:
    """digits: the most digits one number token holds (1 splits numbers into single digits, as Llama-2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(rf"\p{{N}}{{1,{digits}}}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(itertools.chain(texts, _digit_group_texts(digits)), trainer=trainer)
    groups = digit_groups(digits)
    missing = [g for g in groups if tok.token_to_id(g) is None]
    if missing:
        raise UserError(f"tokenizer.vocab_size {vocab_size} leaves {len(missing)} digit groups (e.g. {missing[0]}) "
                        f"without a token; raise it to at least {len(groups) + 512}")
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=BOS,
        pad_token=PAD,
        mask_token=MASK_TOKEN,
        model_max_length=1 << 20,
    )
    fast.save_pretrained(str(out_dir))
    return fast
