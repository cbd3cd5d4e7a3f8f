"""Byte-level BPE tokenizer for the default pair, trained on the KJV training split.

`[MASK]` is declared as a special token at training time (declared later, "a [MASK] b" would tokenise
with a stray space). Digits are split one per token, so 7-digit needle values are always 7 tokens.
Every encoded text starts with `<|endoftext|>` (BOS, also EOS); `<|pad|>` pads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from meap_bench.tokenization import MASK_TOKEN

BOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIALS = [BOS, PAD, MASK_TOKEN]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
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
