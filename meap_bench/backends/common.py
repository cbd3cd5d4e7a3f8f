"""Helpers every backend shares: weight fingerprint, checkpoint tokenizer, device choice. They live outside
any one backend so that a second backend (vllm, fake) identifies and tokenises a checkpoint exactly alike."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, PreTrainedTokenizerBase

from meap_bench.config import Checkpoint
from meap_bench.errors import UserError
from meap_bench.tokenization import load_tokenizer

FINGERPRINT_FILES = ("config.json", "*.safetensors", "*.bin", "tokenizer*", "special_tokens_map.json")
FULL_HASH_LIMIT = 256 << 20


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    return torch.device(device)


def fingerprint_dir(path: Path) -> str:
    """sha256 over the weights, config and tokenizer files (files over 256 MiB: size + first/last
    16 MiB, so that a 15 GB checkpoint is identified in seconds)."""
    digest = hashlib.sha256()
    files = sorted({f for pattern in FINGERPRINT_FILES for f in path.glob(pattern) if f.is_file()})
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}:".encode())
        with open(file, "rb") as handle:
            if size <= FULL_HASH_LIMIT:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            else:
                digest.update(handle.read(16 << 20))
                handle.seek(size - (16 << 20))
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def local_snapshot(name_or_path: str) -> Path:
    if Path(name_or_path).exists():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, local_files_only=True))


def check_weight_files(folder: Path, name: str) -> None:
    """Read every safetensors header now (milliseconds), so that a truncated or corrupt file is named
    before the run starts rather than when the weights load."""
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise UserError(f"checkpoint '{name}': {file} is damaged or incomplete ({err}); copy or download "
                            f"it again") from None


def load_checkpoint_tokenizer(checkpoint: Checkpoint) -> PreTrainedTokenizerBase:
    try:
        return load_tokenizer(checkpoint.tokenizer or checkpoint.path)
    except (OSError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        source = checkpoint.tokenizer or checkpoint.path
        if not Path(source).exists():  # taken for a hub id: it may as well be a mistyped folder
            raise UserError(f"checkpoint '{checkpoint.name}': '{source}' is not a local folder, and as a hub id it "
                            f"cannot be loaded ({first}); fix the path, or check the hub id and the network"
                            ) from None
        raise UserError(f"checkpoint '{checkpoint.name}': cannot load its tokenizer ({first}); "
                        f"set 'tokenizer:' to a folder with tokenizer files") from None


def load_model_config(checkpoint: Checkpoint) -> AutoConfig:
    try:
        return AutoConfig.from_pretrained(checkpoint.path)
    except (OSError, ValueError) as err:
        raise UserError(f"checkpoint '{checkpoint.name}': cannot read config.json ({err})") from None
