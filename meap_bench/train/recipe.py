"""Training recipes: YAML files under `train/` read into plain dataclasses (no pydantic here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from meap_bench.errors import UserError


@dataclass
class ModelSpec:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    rope_theta: float = 10000.0
    tie_embeddings: bool = True


@dataclass
class TokenizerSpec:
    path: str | None = None  # an existing tokenizer dir; else trained on the KJV train split
    vocab_size: int = 4096


@dataclass
class DataSpec:
    seq_len: int = 1024
    magic_share: float = 0.5  # shares of documents in the packed pre-training corpus
    multidoc_share: float = 0.25
    copy_share: float = 0.0  # the rest is plain KJV text
    sft_path: str | None = None  # SFT stage: Alpaca- or conversation-style JSON/JSONL


@dataclass
class TrainSpec:
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
    eval_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024])
    eval_episodes: int = 40
    num_workers: int = 0
    max_minutes: float = 0.0  # stop early (and save) after this much wall time; 0 = no limit
    keep_checkpoints: bool = False  # keep `<out>/_trainer` (optimizer states) after success


@dataclass
class Recipe:
    name: str = "run"
    stage: str = "pretrain"  # pretrain | sft
    objective: list[str] = field(default_factory=lambda: ["ntp", "meap"])
    mask_ratio: float = 0.15  # an sft recipe without it gets SFT_MASK_RATIO
    mask_sampling: str = "per-sequence"  # per-sequence | official
    sft_variant: str = "concat"  # concat | separate-row
    sft_min_answer: int = 50
    seed: int = 1234
    out: str = "checkpoints/{name}-{objective}"
    init: str | None = None  # SFT: the HF checkpoint to start from
    model: ModelSpec = field(default_factory=ModelSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def out_dir(self, objective: str) -> Path:
        return Path(self.out.format(name=self.name, objective=objective))


SFT_MASK_RATIO = 0.1  # the official MEAP-SFT/MEAP-SFT.py `mask_ratio` default (the paper's 10%)

CHOICES = {
    "stage": ("pretrain", "sft"),
    "mask_sampling": ("per-sequence", "official"),
    "sft_variant": ("concat", "separate-row"),
}


def _build(cls, data: dict, where: str, source: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise UserError(f"{source}: unknown field '{where}{key}'; known fields: {', '.join(known)}")
        sub = {"model": ModelSpec, "tokenizer": TokenizerSpec, "data": DataSpec, "train": TrainSpec}.get(key)
        if cls is Recipe and sub is not None:
            if not isinstance(value, dict):
                raise UserError(f"{source}: field '{key}' must be a mapping")
            value = _build(sub, value, f"{key}.", source)
        kwargs[key] = value
    return cls(**kwargs)


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def load_recipe(path: str | Path, overrides: dict | None = None, sets: list[str] | None = None) -> Recipe:
    """Read a recipe, apply `--set KEY=VALUE` strings (YAML-typed values) and then CLI overrides."""
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
        _set(data, key.strip(), yaml.safe_load(value))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(data, key, value)
    if data.get("stage") == "sft":
        data.setdefault("mask_ratio", SFT_MASK_RATIO)
    recipe = _build(Recipe, data, "", str(path))
    if isinstance(recipe.objective, str):
        recipe.objective = [recipe.objective]
    for obj in recipe.objective:
        if obj not in ("ntp", "meap"):
            raise UserError(f"{path}: objective '{obj}' is not ntp or meap; fix the 'objective' field")
    for name, allowed in CHOICES.items():
        if getattr(recipe, name) not in allowed:
            raise UserError(f"{path}: field '{name}' is {getattr(recipe, name)!r}; use one of {', '.join(allowed)}")
    if not 0 <= recipe.mask_ratio < 1:
        raise UserError(f"{path}: mask_ratio {recipe.mask_ratio} must be in [0, 1)")
    if recipe.stage == "sft" and not (recipe.init and recipe.data.sft_path):
        raise UserError(f"{path}: an sft recipe needs 'init' (an HF checkpoint) and 'data.sft_path'")
    return recipe
