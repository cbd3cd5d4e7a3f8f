"""Hugging Face transformers backend (CPU or GPU): one model load serves every task of a run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from meap_bench.backends.base import GenOutput, GenRequest, LLOutput, LLRequest, cut_at_stop
from meap_bench.config import Checkpoint
from meap_bench.errors import UserError
from meap_bench.tokenization import excluded_token_ids, load_tokenizer

R = TypeVar("R")
Out = TypeVar("Out")
FINGERPRINT_FILES = ("config.json", "*.safetensors", "*.bin", "tokenizer*", "special_tokens_map.json")
FULL_HASH_LIMIT = 256 << 20


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


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


def load_checkpoint_tokenizer(checkpoint: Checkpoint) -> PreTrainedTokenizerBase:
    try:
        return load_tokenizer(checkpoint.tokenizer or checkpoint.path)
    except (OSError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint '{checkpoint.name}': cannot load its tokenizer ({first}); "
                        f"set 'tokenizer:' to a folder with tokenizer files") from None


class HFBackend:
    """Tokenizer, config and fingerprint are read at once; the weights load on first use, so a resumed
    run whose samples are all recorded never loads them."""

    def __init__(self, checkpoint: Checkpoint, device: str = "auto") -> None:
        self.name = checkpoint.name
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(checkpoint.dtype, self.device)
        self.batch_size = checkpoint.batch_size
        self.tokenizer = load_checkpoint_tokenizer(checkpoint)
        try:
            config = AutoConfig.from_pretrained(checkpoint.path)
        except (OSError, ValueError) as err:
            raise UserError(f"checkpoint '{checkpoint.name}': cannot read config.json ({err})") from None
        self.max_length = checkpoint.max_length or int(config.max_position_embeddings)
        self.fingerprint = fingerprint_dir(local_snapshot(checkpoint.path))
        self.excluded_ids = excluded_token_ids(self.tokenizer, int(config.vocab_size))
        tok = self.tokenizer
        self.pad_id = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
        self._model: PreTrainedModel | None = None

    @classmethod
    def load(cls, checkpoint: Checkpoint, device: str = "auto") -> HFBackend:
        return cls(checkpoint, device)

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            try:
                model = AutoModelForCausalLM.from_pretrained(self.checkpoint.path, dtype=self.dtype)
            except OSError as err:
                raise UserError(f"checkpoint '{self.name}': cannot load weights from "
                                f"'{self.checkpoint.path}' ({err})") from None
            self._model = model.to(self.device).eval()
            rows = model.get_output_embeddings().weight.shape[0]
            self.excluded_ids = excluded_token_ids(self.tokenizer, rows)
            self.excluded = torch.zeros(rows, dtype=torch.bool, device=self.device)
            self.excluded[self.excluded_ids] = True
        return self._model

    def masked_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits in float32 with padding rows and [MASK] at -inf: they can never be produced or win."""
        return logits.float().masked_fill(self.excluded, float("-inf"))

    def batched(self, items: Sequence[R], length: Callable[[R], int],
                run: Callable[[list[R]], list[Out]]) -> list[Out]:
        """Run `items` longest first in batches, halving the batch on CUDA out-of-memory; results come
        back in the original order."""
        order = sorted(range(len(items)), key=lambda i: -length(items[i]))
        results: list[Out | None] = [None] * len(items)
        start = 0
        while start < len(order):
            chunk = order[start:start + self.batch_size]
            try:
                outputs = run([items[i] for i in chunk])
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                self.batch_size //= 2
                continue
            for index, output in zip(chunk, outputs, strict=True):
                results[index] = output
            start += len(chunk)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        return self.batched(requests, lambda r: len(r.prompt_ids), self._generate_batch)

    def _generate_batch(self, requests: list[GenRequest]) -> list[GenOutput]:
        model = self.model  # loads the weights (and the excluded ids of its real embedding size)
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            ids[row, width - len(request.prompt_ids):] = torch.tensor(request.prompt_ids)
            mask[row, width - len(request.prompt_ids):] = 1
        stop = sorted({s for r in requests for s in r.stop})
        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in requests), do_sample=False, num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.pad_id,
            suppress_tokens=self.excluded_ids or None, stop_strings=stop or None,
        )
        out = model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=config, tokenizer=self.tokenizer)
        outputs = []
        for row, request in enumerate(requests):
            new = out[row, width:width + request.max_new_tokens].tolist()
            if self.tokenizer.eos_token_id in new:
                new = new[:new.index(self.tokenizer.eos_token_id)]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            outputs.append(GenOutput(text=cut_at_stop(text, request.stop), token_ids=new))
        return outputs

    @torch.inference_mode()
    def loglikelihood(self, requests: list[LLRequest]) -> list[LLOutput]:
        for request in requests:
            if not request.continuation_ids:
                raise ValueError("loglikelihood needs a non-empty continuation")
        return self.batched(requests, lambda r: len(r.context_ids) + len(r.continuation_ids),
                            self._loglikelihood_batch)

    def _loglikelihood_batch(self, requests: list[LLRequest]) -> list[LLOutput]:
        sequences = [(r.context_ids + r.continuation_ids)[:-1] for r in requests]
        width = max(len(s) for s in sequences)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        outputs = []
        for row, request in enumerate(requests):
            n = len(request.continuation_ids)
            end = len(sequences[row])
            scores = torch.log_softmax(self.masked_logits(logits[row, end - n:end]), dim=-1)
            target = torch.tensor(request.continuation_ids, device=self.device)
            logprob = scores.gather(-1, target[:, None]).sum().item()
            greedy = bool((scores.argmax(-1) == target).all().item())
            outputs.append(LLOutput(logprob=logprob, is_greedy=greedy))
        return outputs
