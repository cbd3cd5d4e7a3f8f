"""`--set` values: parsed alike for evaluation and training, validated with one-line errors naming the key,
a single value accepted for every list key; `train` never overwrites a checkpoint unless asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meap_bench.cli import main
from meap_bench.config import parse_override
from meap_bench.errors import UserError
from meap_bench.tasks import TASKS, load_task_config
from meap_bench.train.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY_PAIR = REPO / "train" / "tiny-pair.yaml"

SINGLE_VALUES = {  # every list-valued task setting, given one value
    "needle.context_lengths=256": [256],
    "needle.depths=50": [50.0],
    "mdqa.n_docs=10": [10],
    "mdqa.positions=1": [1],
    "kv.n_pairs=8": [8],
    "kv.positions=2": [2],
    "commonsense.tasks=meap_arc_mini": ["meap_arc_mini"],
    "commonsense.include_path=commonsense": ["commonsense"],
    "hallucination.datasets=local-qa": ["local-qa"],
    "attention.sources=needle": ["needle"],
}


@pytest.mark.parametrize("override", sorted(SINGLE_VALUES))
def test_single_value_for_a_list_key_is_a_one_element_list(override):
    task, key, value = parse_override(override)
    assert getattr(load_task_config(task, [(task, key, value)], REPO / "tasks"), key) == SINGLE_VALUES[override]


def test_every_list_key_of_every_task_config_is_covered():
    listed = {o.split("=")[0] for o in SINGLE_VALUES}
    for name, task in TASKS.items():
        for key, info in task.config_model.model_fields.items():
            if "list[" in str(info.annotation):
                assert f"{name}.{key}" in listed, f"{name}.{key} takes a list: add it to SINGLE_VALUES"


def test_custom_needle_takes_one_distractor():
    spec = "{fact: 'x {key} {value}', question: q, answer_prefix: p, answer: '{value}', distractors: other}"
    config = load_task_config("needle", [("needle", "needle", parse_override(f"needle.needle={spec}")[2])])
    assert config.needle.distractors == ["other"]


def test_validate_accepts_single_values_on_the_command_line(checkpoints_yaml, capsys):
    assert main(["validate", "--checkpoints", str(checkpoints_yaml), "--tasks", "needle,mdqa", "--set",
                 "needle.context_lengths=256", "--set", "needle.depths=50", "--set", "mdqa.n_docs=5"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("setting", "expected"), [
    ("train.eval_lengths=128", [128]),
    ("train.eval_lengths=256,512", [256, 512]),
    ("objective=meap", ["meap"]),
    ("train.lr=2e-3", 2e-3),
    ("train.steps=7", 7),
    ("tokenizer.path=some/dir", "some/dir"),
])
def test_trainer_set_values_are_parsed_like_evaluation_ones(setting, expected):
    recipe = load_recipe(TINY_PAIR, sets=[setting])
    key = setting.split("=")[0]
    node = recipe
    for part in key.split("."):
        node = getattr(node, part)
    assert node == expected


@pytest.mark.parametrize(("setting", "message"), [
    ("train.steps=abc", "field 'train.steps': \"abc\" is invalid"),
    ("train.eval_lengths=256,x", "field 'train.eval_lengths.1': \"x\" is invalid"),
    ("model.hidden_size=1.5", "field 'model.hidden_size': 1.5 is invalid"),
    ("train.stepz=3", "unknown field 'train.stepz'; known fields: steps,"),
    ("colour=red", "unknown field 'colour'; known fields: name,"),
    ("train.steps.x=1", "'train.steps.x' goes through 'steps', which is not a mapping"),
])
def test_trainer_set_mistakes_are_one_line_errors_naming_the_key(setting, message):
    with pytest.raises(UserError) as err:
        load_recipe(TINY_PAIR, sets=[setting])
    assert message in str(err.value) and "\n" not in str(err.value)
    if "goes through" not in message:
        assert str(err.value).startswith(f"{TINY_PAIR} with --set: ")


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_pair) -> Path:
    """A copy of the project layout (train/tiny-pair.yaml, checkpoints/) with a checkpoint already in
    checkpoints/tiny-ntp; the --set values keep any accidental training tiny."""
    (tmp_path / "train").mkdir()
    shutil.copy(TINY_PAIR, tmp_path / "train" / "tiny-pair.yaml")
    shutil.copytree(tiny_pair["ntp"], tmp_path / "checkpoints" / "tiny-ntp")
    monkeypatch.chdir(tmp_path)
    return tmp_path


SMALL = ["--set", "train.steps=1", "--set", "train.eval_every=0", "--set", "data.seq_len=32", "--set",
         "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.intermediate_size=32",
         "--device", "cpu"]


def test_train_refuses_to_overwrite_a_checkpoint(project, tiny_pair, capsys):
    before = {p.name: p.read_bytes() for p in (project / "checkpoints" / "tiny-ntp").iterdir()}
    assert main(["train", "--recipe", "tiny-pair", "--set", f"tokenizer.path={tiny_pair['root'] / 'tokenizer'}",
                 *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: train: checkpoints/tiny-ntp already holds a checkpoint")
    assert "--out DIR" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in (project / "checkpoints" / "tiny-ntp").iterdir()} == before
    assert not (project / "checkpoints" / "tiny-meap").exists()  # refused before either twin trained


def test_train_force_and_out_pass_the_guard(project):
    from meap_bench.cli import build_parser
    from meap_bench.train.command import out_dir, refuse_overwrite

    args = build_parser().parse_args(["train", "--recipe", "tiny-pair", "--force"])
    assert args.force and not args.resume
    recipe = load_recipe(project / "train" / "tiny-pair.yaml")
    with pytest.raises(UserError, match="already holds a checkpoint"):
        refuse_overwrite(out_dir(recipe, "ntp", None))
    elsewhere = out_dir(recipe, "ntp", str(project / "new"))
    assert elsewhere == project / "new" / "tiny-ntp"
    refuse_overwrite(elsewhere)  # an empty (or absent) folder is fine
