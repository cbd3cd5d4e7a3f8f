"""Training recipes: YAML files under `train/` read into dataclasses, validated by pydantic like the
evaluation configs (unknown fields and wrong types are one-line errors; `--set` values parsed alike)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from meap_bench.config import OneOrMore, apply_override, error_location, parse_value
from meap_bench.errors import UserError

STRICT = ConfigDict(extra="forbid")


@dataclass
class ModelSpec:
    __pydantic_config__ = STRICT

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    rope_theta: float = 10000.0
    tie_embeddings: bool = True


@dataclass
class TokenizerSpec:
    __pydantic_config__ = STRICT

    path: str | None = None  # an existing tokenizer dir; else trained on the KJV train split
    vocab_size: int = 4096
    digits: int = 3  # the most digits in one number token (1..3); 1 = one digit per token


@dataclass
class DataSpec:
    __pydantic_config__ = STRICT

    seq_len: int = 1024
    magic_share: float = 0.5  # shares of documents in the packed pre-training corpus
    multidoc_share: float = 0.25
    copy_share: float = 0.0  # the rest is plain KJV text
    loss_on_new_numbers: bool = True  # false: no loss on a number's first mention in a document (random values)
    curriculum: float = 0.0  # share of steps over which the longest document grows from 64 tokens to seq_len
    magic_max_tokens: int = 0  # >0: the longest haystack of a magic-number episode (retrieval trained up to it)
    sft_path: str | None = None  # SFT stage: Alpaca- or conversation-style JSON/JSONL


@dataclass
class TrainSpec:
    __pydantic_config__ = STRICT

    steps: int = 1000
    epochs: int = 1  # SFT only, when steps is 0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    save_dtype: str = "float32"  # dtype of the final safetensors: float32 | bfloat16
    log_every: int = 25
    save_every: int = 500
    eval_every: int = 250  # held-out episode exact match (pre-training only); 0 = off
    eval_lengths: OneOrMore[int] = field(default_factory=lambda: [256, 512, 1024])
    eval_episodes: int = 40
    num_workers: int = 0
    max_minutes: float = 0.0  # stop early (and save) after this much wall time; 0 = no limit
    keep_checkpoints: bool = False  # keep `<out>/_trainer` (optimizer states) after success


@dataclass
class Recipe:
    __pydantic_config__ = STRICT

    name: str = "run"
    stage: str = "pretrain"  # pretrain | sft
    objective: OneOrMore[str] = field(default_factory=lambda: ["ntp", "meap"])
    mask_ratio: float = 0.15  # an sft recipe without it gets SFT_MASK_RATIO
    mask_sampling: str = "per-sequence"  # per-sequence | official
    sft_variant: str = "concat"  # concat | separate-row
    sft_min_answer: int = 50
    seed: int = 1234
    out: str = "checkpoints/{name}-{objective}"
    init: str | None = None  # the HF checkpoint to start from (SFT; or pre-training continued); may hold {objective}
    model: ModelSpec = field(default_factory=ModelSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def out_dir(self, objective: str) -> Path:
        return Path(self.out.format(name=self.name, objective=objective))

    def init_dir(self, objective: str) -> str:
        return (self.init or "").format(name=self.name, objective=objective)


SFT_MASK_RATIO = 0.1  # the official MEAP-SFT/MEAP-SFT.py `mask_ratio` default (the paper's 10%)
SECTIONS = {"model": ModelSpec, "tokenizer": TokenizerSpec, "data": DataSpec, "train": TrainSpec}
CHOICES = {
    "stage": ("pretrain", "sft"),
    "mask_sampling": ("per-sequence", "official"),
    "sft_variant": ("concat", "separate-row"),
}


def validated(data: dict, source: str) -> Recipe:
    """The recipe, or a one-line UserError naming the first wrong field."""
    try:
        return TypeAdapter(Recipe).validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = error_location(first)
        if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            owner = SECTIONS.get(loc.split(".")[0], Recipe) if "." in loc else Recipe
            known = ", ".join(f.name for f in fields(owner))
            raise UserError(f"{source}: unknown field '{loc}'; known fields: {known}") from None
        value = json.dumps(first.get("input"), default=str)
        raise UserError(f"{source}: field '{loc}': {value} is invalid ({first['msg'].lower()})") from None


def load_recipe(path: str | Path, overrides: dict | None = None, sets: list[str] | None = None) -> Recipe:
    """Read a recipe, apply `--set KEY=VALUE` strings (parsed as evaluation `--set` values: `a,b` is a
    list) and then CLI overrides, and validate the result."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe not found; pass --config train/<recipe>.yaml or --recipe NAME")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of fields")
    data.setdefault("name", path.stem)
    for item in sets or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=100")
        key, value = item.split("=", 1)
        apply_override(data, key.strip(), parse_value(value, item))
    for key, value in (overrides or {}).items():
        if value is not None:
            apply_override(data, key, value)
    if data.get("stage") == "sft":
        data.setdefault("mask_ratio", SFT_MASK_RATIO)
    recipe = validated(data, f"{path}" + (" with --set" if sets else ""))
    for obj in recipe.objective:
        if obj not in ("ntp", "meap"):
            raise UserError(f"{path}: objective '{obj}' is not ntp or meap; fix the 'objective' field")
    for name, allowed in CHOICES.items():
        if getattr(recipe, name) not in allowed:
            raise UserError(f"{path}: field '{name}' is {getattr(recipe, name)!r}; use one of {', '.join(allowed)}")
    if not 1 <= recipe.tokenizer.digits <= 3:
        raise UserError(f"{path}: tokenizer.digits {recipe.tokenizer.digits} must be 1, 2 or 3")
    if recipe.data.magic_max_tokens and recipe.data.magic_max_tokens < 32:  # a cap >= seq_len is never reached
        raise UserError(f"{path}: data.magic_max_tokens {recipe.data.magic_max_tokens} must be 0 (no cap) or at "
                        "least 32 (the shortest haystack drawn is about 30 tokens)")
    if not 0 <= recipe.mask_ratio < 1:
        raise UserError(f"{path}: mask_ratio {recipe.mask_ratio} must be in [0, 1)")
    if recipe.stage == "sft" and not (recipe.init and recipe.data.sft_path):
        raise UserError(f"{path}: an sft recipe needs 'init' (an HF checkpoint) and 'data.sft_path'")
    return recipe
