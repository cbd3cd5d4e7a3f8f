"""The `train` subcommand: `python -m meap_bench train --recipe tiny-pair` and friends."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from meap_bench.errors import UserError

if TYPE_CHECKING:
    from meap_bench.train.recipe import Recipe

RECIPE_DIR = Path("train")
CHECKPOINT_FILES = ("config.json", "model.safetensors")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an NTP model and/or its MEAP twin from a recipe",
        description="Pre-train (or fine-tune) NTP and MEAP twins from a train/*.yaml recipe.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="recipe file, e.g. train/tiny-pair.yaml")
    src.add_argument("--recipe", help="recipe name: train/NAME.yaml")
    p.add_argument("--objective", choices=["ntp", "meap"], help="train only this twin (default: the recipe's list)")
    p.add_argument("--mask-ratio", type=float, help="MEAP mask ratio P (default 0.15)")
    p.add_argument("--mask-sampling", choices=["per-sequence", "official"])
    p.add_argument("--stage", choices=["pretrain", "sft"])
    p.add_argument("--sft-variant", choices=["concat", "separate-row"])
    p.add_argument(
        "--out",
        help="output dir; with several objectives, {objective} is filled in or a NAME-OBJECTIVE subfolder is made",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <out>/_trainer")
    p.add_argument("--force", action="store_true", help="overwrite an output folder that already holds a checkpoint")
    p.add_argument("--device", help="cpu, cuda or auto (default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meap_bench.train.recipe import load_recipe
    from meap_bench.train.run import train_one

    path = Path(args.config) if args.config else RECIPE_DIR / f"{args.recipe}.yaml"
    if args.recipe and not path.is_file():
        known = ", ".join(sorted(x.stem for x in RECIPE_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"--recipe {args.recipe}: {path} not found; known recipes: {known}")
    overrides = {
        "objective": [args.objective] if args.objective else None,
        "mask_ratio": args.mask_ratio,
        "mask_sampling": args.mask_sampling,
        "stage": args.stage,
        "sft_variant": args.sft_variant,
    }
    recipe = load_recipe(path, overrides, args.sets)
    outs = {objective: out_dir(recipe, objective, args.out) for objective in recipe.objective}
    if not (args.force or args.resume):
        for out in outs.values():
            refuse_overwrite(out)
    for objective, out in outs.items():
        print(f"[train] {recipe.name}: {objective} -> {out}")
        train_one(recipe, objective, out, resume=args.resume, device=args.device)
    return 0


def out_dir(recipe: Recipe, objective: str, out: str | None) -> Path:
    """Where one twin goes: the recipe's `out`, or `--out` (with several objectives, `{objective}` is
    filled in or a NAME-OBJECTIVE subfolder is made)."""
    if out is None:
        return recipe.out_dir(objective)
    if "{objective}" in out or len(recipe.objective) > 1:
        if "{" in out:
            return Path(out.format(objective=objective, name=recipe.name))
        return Path(out) / f"{recipe.name}-{objective}"
    return Path(out)


def refuse_overwrite(out: Path) -> None:
    """Training never replaces an existing checkpoint (such as the shipped checkpoints/tiny-*) by
    accident: checked for every twin before any training starts."""
    held = [name for name in CHECKPOINT_FILES if (out / name).exists()]
    if held:
        raise UserError(f"train: {out} already holds a checkpoint ({', '.join(held)}); pass --out DIR to train "
                        f"into another folder, or --force to overwrite it")
