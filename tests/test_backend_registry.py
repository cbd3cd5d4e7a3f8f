"""Backend registry and identity: declared capabilities match the loaded backends, the fake backend drives
the real runner and report, and backend and capabilities are part of the run name, run.json and every record."""

from __future__ import annotations

import json

import pytest

from meap_bench.backends import REGISTRY, load_backend
from meap_bench.backends.base import ATTENTION, REAL_VOCAB, GenRequest, LLRequest
from meap_bench.cli import main
from meap_bench.config import load_checkpoints
from meap_bench.errors import UserError
from meap_bench.records import read_records

GRID = ["--set", "needle.context_lengths=128", "--set", "needle.depths=0,100", "--set", "needle.haystack=noise",
        "--set", "needle.samples_per_cell=3", "--set", "needle.distractors=2"]


def run_args(checkpoints_yaml, out, *extra: str) -> list[str]:
    return ["run", "--tasks", "needle", "--checkpoints", str(checkpoints_yaml), "--out", str(out), "--device", "cpu",
            *GRID, *extra]


@pytest.mark.parametrize("name", ["hf", "fake"])
def test_registered_capabilities_are_the_backends_own(name, checkpoints_yaml):
    checkpoint = load_checkpoints(checkpoints_yaml)[1]
    backend = load_backend(checkpoint, name, "cpu")
    assert backend.capabilities == REGISTRY[name].capabilities
    hf = load_backend(checkpoint, "hf", "cpu")
    assert backend.fingerprint == hf.fingerprint and backend.tokenizer.get_vocab() == hf.tokenizer.get_vocab()


def test_unknown_backend_is_a_user_error(checkpoints_yaml):
    with pytest.raises(UserError, match="--backend 'nope' is unknown; choose one of: hf, vllm, fake"):
        load_backend(load_checkpoints(checkpoints_yaml)[0], "nope")


def test_fake_backend_is_deterministic_and_never_emits_excluded_ids(checkpoints_yaml):
    checkpoint = load_checkpoints(checkpoints_yaml)[1]
    a, b = load_backend(checkpoint, "fake"), load_backend(checkpoint, "fake")
    gen = [GenRequest(list(range(10, 40)), 8), GenRequest([5, 6, 7], 4, ("\n",))]
    assert a.generate(gen) == b.generate(gen)
    mask_id = a.tokenizer.convert_tokens_to_ids("[MASK]")
    assert all(mask_id not in out.token_ids for out in a.generate([GenRequest([i], 6) for i in range(50)]))
    ll = [LLRequest([1, 2, 3], [4]), LLRequest([1, 2, 3], [5, 6])]
    assert a.loglikelihood(ll) == b.loglikelihood(ll)
    assert all(out.logprob < 0 for out in a.loglikelihood(ll))


def test_fake_backend_run_records_backend_and_capabilities_and_reports(checkpoints_yaml, tmp_path, capsys):
    assert main(run_args(checkpoints_yaml, tmp_path, "--backend", "fake")) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert "-fake-" in run_dir.name  # the backend is part of the default run name
    records = read_records(run_dir / "records.jsonl")
    assert len(records) == 2 * 2 * 3
    assert {(r.backend, tuple(r.capabilities)) for r in records} == {("fake", (REAL_VOCAB,))}
    run = json.loads((run_dir / "run.json").read_text())
    assert run["backend"] == "fake" and run["capabilities"] == [REAL_VOCAB]
    assert (run_dir / "tables" / "needle_cells.md").is_file() and (run_dir / "summary.json").is_file()
    # the hf backend gets its own run directory by default, and is refused in this one
    assert main(run_args(checkpoints_yaml, tmp_path, "--limit", "1")) == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(names) == 2 and any("-hf-" in n for n in names)
    assert main(run_args(checkpoints_yaml, tmp_path, "--run-name", run_dir.name)) == 2
    assert "holds records of backend 'fake', not 'hf'" in capsys.readouterr().err


def test_full_vocabulary_backend_is_noted_in_the_report(checkpoints_yaml, tmp_path, capsys):
    assert main(run_args(checkpoints_yaml, tmp_path, "--backend", "fake", "--run-name", "r")) == 0
    run_path = tmp_path / "r" / "run.json"
    run = json.loads(run_path.read_text())
    run["capabilities"] = []  # as a vllm run records them
    run_path.write_text(json.dumps(run))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r")]) == 0
    assert "normalises loglikelihoods over the full vocabulary" in capsys.readouterr().err


def test_task_needing_a_missing_capability_names_the_backends_that_have_it(checkpoints_yaml, tmp_path, capsys):
    assert main(["run", "--tasks", "attention", "--checkpoints", str(checkpoints_yaml), "--out", str(tmp_path),
                 "--backend", "fake", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"needs the backend capability '{ATTENTION}'" in err and "(hf)" in err
