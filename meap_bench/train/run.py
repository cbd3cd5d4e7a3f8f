"""Training entry point on transformers' `Trainer` (so accelerate, torchrun and DeepSpeed work as usual).

One call of `train_one` trains one objective of a recipe into one HF checkpoint directory:
config.json, model.safetensors, tokenizer files and `meap_bench_train.json`. Trainer checkpoints (with
optimizer states, for `--resume`) live in `<out>/_trainer/` and are removed after success unless the
recipe keeps them. The corpus is read in order (no sampler shuffling: sequence idx is itself random), so
a run and its twin see the same data, masks depend only on (seed, idx), and resume is exact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import SequentialSampler
from transformers import ProgressCallback, Trainer, TrainerCallback, TrainingArguments

from meap_bench.data.cache import cache_dir
from meap_bench.errors import UserError
from meap_bench.provenance import source_commit
from meap_bench.tokenization import load_tokenizer, mask_token_id
from meap_bench.train import corpus
from meap_bench.train.masking import MeapCollator
from meap_bench.train.model import build_llama, load_checkpoint
from meap_bench.train.recipe import Recipe
from meap_bench.train.sft import SftCollator, SftDataset, build_sft_rows, load_records
from meap_bench.train.tokenizer import train_tokenizer

META_FILE = "meap_bench_train.json"


def resolve_tokenizer(recipe: Recipe, objective: str):
    if recipe.init:  # SFT or continued pre-training: the starting checkpoint's tokenizer
        try:
            return load_tokenizer(recipe.init_dir(objective))
        except OSError:
            raise UserError(f"init {recipe.init_dir(objective)}: no checkpoint with a tokenizer there (a local "
                            "folder, or a hub id already in the cache); fix the recipe's 'init'") from None
    if recipe.tokenizer.path:
        if not (Path(recipe.tokenizer.path) / "tokenizer.json").is_file():
            raise UserError(f"tokenizer.path {recipe.tokenizer.path}: no tokenizer.json there; fix the path")
        return load_tokenizer(recipe.tokenizer.path)
    spec = recipe.tokenizer
    path = cache_dir() / "tokenizers" / f"kjv-bpe-digits{spec.digits}-{spec.vocab_size}"
    if not (path / "tokenizer.json").is_file():
        train_tokenizer(corpus.kjv_training_texts(), spec.vocab_size, path, spec.digits)
    return load_tokenizer(path)


class _InOrderTrainer(Trainer):
    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


class _Progress(ProgressCallback):
    """The Trainer's tqdm bar (steps, ETA) with loss, tokens/s and lr as its postfix."""

    def __init__(self, tokens_per_step: int):
        super().__init__()
        self.tokens_per_step, self.last = tokens_per_step, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is None or not logs:
            return
        now = time.perf_counter()
        if self.last is not None and state.global_step > self.last[1]:
            logs["tokens_per_s"] = round(
                (state.global_step - self.last[1]) * self.tokens_per_step / (now - self.last[0])
            )
        self.last = (now, state.global_step)
        post = {k: f"{logs[k]:.4g}" for k in ("loss", "tokens_per_s", "learning_rate") if k in logs}
        post.update({k: f"{v:.2f}" for k, v in logs.items() if k.startswith("em_")})
        self.training_bar.set_postfix(post, refresh=False)
        if any(k.startswith("em_") for k in logs):
            self.training_bar.write(json.dumps({"step": state.global_step, **logs}))


class _HeldoutEval(TrainerCallback):
    """Every `eval_every` steps and at the end: teacher-forced exact match and answer loss on held-out
    magic-number needles per length and on 10-document QA, logged into the trainer's log history."""

    def __init__(self, trainer: Trainer, tokenizer, recipe: Recipe):
        t = recipe.train
        self.trainer, self.every = trainer, t.eval_every
        self.sets = {f"needle_{n}": corpus.heldout_needles(tokenizer, n, t.eval_episodes) for n in t.eval_lengths}
        self.sets["mdqa_10docs"] = [
            e for g in (1, 5, 10) for e in corpus.heldout_multidoc(tokenizer, 10, g, max(1, t.eval_episodes // 3))
        ]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step == state.max_steps or control.should_training_stop  # (the time limit too)
        if not (state.global_step % self.every == 0 or last):
            return
        if not state.is_world_process_zero:  # (with FSDP or ZeRO-3 set train.eval_every=0)
            return
        dtype = torch.bfloat16 if args.bf16 else None
        logs = {}
        for name, episodes in self.sets.items():
            em, loss = corpus.exact_match(model, episodes, next(model.parameters()).device, dtype)
            logs[f"em_{name}"], logs[f"answer_loss_{name}"] = em, round(loss, 4)
        self.trainer.log(logs)


class _TimeLimit(TrainerCallback):
    """Safety valve (`train.max_minutes`): stop early, and still save, when the wall clock runs out."""

    def __init__(self, minutes: float):
        self.deadline = time.perf_counter() + 60 * minutes

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() > self.deadline:
            control.should_training_stop = True


def _cast_saved(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite saved floating-point weights (and config.json's dtype) in `dtype`."""
    for shard in folder.glob("*.safetensors"):
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(shard)).items()}
        save_file(tensors, str(shard), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def make_trainer(recipe: Recipe, objective: str, out: Path, device: str | None = None) -> tuple[Trainer, dict]:
    """The configured Trainer for one twin, and the facts that go into meap_bench_train.json."""
    t, d = recipe.train, recipe.data
    use_cuda = torch.cuda.is_available() if device in (None, "auto") else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
    bf16 = t.dtype == "bf16" or (t.dtype == "auto" and use_cuda)
    ratio = recipe.mask_ratio if objective == "meap" else 0.0
    tok = resolve_tokenizer(recipe, objective)
    mask_id = mask_token_id(tok)
    global_batch = t.batch_size * t.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    if recipe.stage == "pretrain":
        steps = t.steps
        dataset = corpus.PretrainCorpus(
            tok,
            d.seq_len,
            steps * global_batch,
            recipe.seed,
            (d.magic_share, d.multidoc_share, d.copy_share),
            d.loss_on_new_numbers,
            d.curriculum,
            d.magic_max_tokens,
        )
        collator = MeapCollator(mask_id, ratio, recipe.mask_sampling, recipe.seed, global_batch)
        model = load_checkpoint(recipe.init_dir(objective), tok, d.seq_len) if recipe.init else build_llama(recipe, tok)
        tokens_seen = steps * global_batch * d.seq_len
        data_sha = corpus.data_sha256(tok, vars(d), recipe.seed)
    else:
        model = load_checkpoint(recipe.init_dir(objective), tok)
        rows = build_sft_rows(
            load_records(d.sft_path),
            tok,
            mask_id=mask_id if ratio > 0 else None,
            variant=recipe.sft_variant,
            ratio=ratio,
            min_answer=recipe.sft_min_answer,
            max_len=d.seq_len,
            seed=recipe.seed,
        )
        dataset = SftDataset(rows, t.epochs, recipe.seed)
        steps = t.steps or math.ceil(len(dataset) / global_batch)
        collator = SftCollator(tok.pad_token_id)
        tokens_seen = sum(len(dataset[i]["input_ids"]) for i in range(min(len(dataset), steps * global_batch)))
        data_sha = corpus.hashlib.sha256(Path(d.sft_path).read_bytes()).hexdigest()
    args = TrainingArguments(
        output_dir=str(out / "_trainer"),
        max_steps=steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": t.min_lr_ratio},
        warmup_steps=int(t.warmup_ratio * steps),
        weight_decay=t.weight_decay,
        adam_beta1=t.beta1,
        adam_beta2=t.beta2,
        max_grad_norm=t.clip,
        bf16=bf16,
        logging_steps=t.log_every,
        save_steps=t.save_every,
        save_total_limit=1,
        seed=recipe.seed,
        data_seed=recipe.seed,
        dataloader_num_workers=t.num_workers,
        report_to="none",
        remove_unused_columns=False,
        use_cpu=not use_cuda,
        disable_tqdm=False,
    )
    trainer = _InOrderTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=tok
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_Progress(global_batch * d.seq_len if recipe.stage == "pretrain" else 0))
    if t.max_minutes:  # before the held-out check, which then also runs at a time-limit stop
        trainer.add_callback(_TimeLimit(t.max_minutes))
    if recipe.stage == "pretrain" and t.eval_every > 0:
        trainer.add_callback(_HeldoutEval(trainer, tok, recipe))
    info = {
        "objective": objective,
        "mask_ratio": ratio,
        "tokens_per_step": global_batch * d.seq_len,
        "tokens_seen": tokens_seen,
        "steps": steps,
        "data_sha256": data_sha,
        "device": use_cuda,
        "bf16": bf16,
    }
    return trainer, info


def train_one(recipe: Recipe, objective: str, out: Path, resume: bool = False, device: str | None = None) -> Path:
    """Train one twin into `out` (an HF checkpoint dir with meap_bench_train.json)."""
    work = out / "_trainer"
    if resume and not any(work.glob("checkpoint-*")):
        raise UserError(f"--resume: no checkpoint under {work}; run without --resume to start afresh")
    trainer, info = make_trainer(recipe, objective, out, device)
    t = recipe.train
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - start
    trainer.model.config.use_cache = True  # the Trainer turns it off; generation wants it
    trainer.save_model(str(out))  # gathers DDP / FSDP / DeepSpeed weights; writes the tokenizer too
    if not trainer.is_world_process_zero():
        return out
    (out / "training_args.bin").unlink(missing_ok=True)
    if t.save_dtype == "bfloat16":
        _cast_saved(out, torch.bfloat16)
    history, ratio, steps = trainer.state.log_history, info["mask_ratio"], trainer.state.global_step
    meta = {
        "objective": objective,
        "mask_ratio": ratio,
        "mask_sampling": recipe.mask_sampling if ratio and recipe.stage == "pretrain" else None,
        "sft_variant": recipe.sft_variant if recipe.stage == "sft" and ratio else None,
        "stage": recipe.stage,
        "init": recipe.init_dir(objective) or None,
        "tokens_seen": info["tokens_seen"] * steps // max(1, info["steps"]),
        "steps": steps,
        "seed": recipe.seed,
        "data_sha256": info["data_sha256"],
        **source_commit(),
        "recipe": recipe.name,
        "train_seconds": round(seconds, 1),
        "bf16": info["bf16"],
        "device": torch.cuda.get_device_name() if info["device"] else "cpu",
        "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "heldout_eval": [h for h in history if any(k.startswith("em_") for k in h)],
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if not t.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    return out
