"""Model construction: a Llama sized by the recipe (pre-training) or any HF causal LM (SFT)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from meap_bench.tokenization import MASK_TOKEN, mask_token_id, pad_vocab_size
from meap_bench.train.recipe import Recipe


def build_llama(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """Fresh weights from `recipe.seed`: NTP and MEAP twins of one recipe start identical."""
    m = recipe.model
    config = LlamaConfig(
        vocab_size=pad_vocab_size(len(tokenizer)),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_kv_heads,
        max_position_embeddings=recipe.data.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
        tie_word_embeddings=m.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    return LlamaForCausalLM(config)


def load_checkpoint(path: str, tokenizer: PreTrainedTokenizerBase, seq_len: int = 0) -> torch.nn.Module:
    """An existing checkpoint (SFT, continued pre-training), with `[MASK]` added and embeddings padded to a
    multiple of 64 if needed; its declared context is raised to `seq_len` when training goes longer."""
    if mask_token_id(tokenizer) is None:
        tokenizer.add_special_tokens({"additional_special_tokens": [MASK_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, seq_len)
    return model
