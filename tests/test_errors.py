"""Bad input: a one-line error naming the file, field or value, and exit code 2 — never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meap_bench.cli import main

REPO = Path(__file__).resolve().parents[1]


def entry(name: str, path: Path | str, objective: str = "ntp", pair: str = "p", extra: str = "") -> str:
    return f"- name: {name}\n  path: {path}\n  objective: {objective}\n  pair: {pair}\n{extra}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ck.yaml"
    path.write_text(text)
    return path


def no_tokenizer(tiny_pair, tmp_path) -> Path:
    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_pair["ntp"] / name, folder / name)
    return folder


CASES = {
    "bad yaml": (lambda t, p: write(t, "- name: [unclosed\n"), ["validate"], "invalid YAML at line"),
    "not a list": (lambda t, p: write(t, "name: x\n"), ["validate"], "expected a non-empty YAML list"),
    "unknown key": (lambda t, p: write(t, entry("a", p["ntp"], extra="  colour: red\n")), ["validate"],
                    "checkpoint 'a': unknown key 'colour'; allowed keys: name, path"),
    "missing dir": (lambda t, p: write(t, entry("a", t / "nowhere")), ["validate"], "does not exist"),
    "no config.json": (lambda t, p: write(t, entry("a", t)), ["validate"], "has no config.json"),
    "tokenizer missing": (lambda t, p: write(t, entry("a", no_tokenizer(p, t))), ["validate"],
                          "cannot load its tokenizer"),
    "duplicate name": (lambda t, p: write(t, entry("a", p["ntp"]) + entry("a", p["meap"], "meap")),
                       ["validate"], "duplicate checkpoint name 'a'"),
    "two meap in a pair": (lambda t, p: write(t, entry("a", p["ntp"], "meap") + entry("b", p["meap"], "meap")),
                           ["validate"], "pair 'p' has 2 MEAP members"),
    "bad objective": (lambda t, p: write(t, entry("a", p["ntp"], "mlm")), ["validate"], "objective"),
    "missing objective": (lambda t, p: write(t, f"- name: a\n  path: {p['ntp']}\n"), ["validate"],
                          "no objective"),
    "no such file": (lambda t, p: t / "absent.yaml", ["validate"], "file not found"),
    "unknown task": (None, ["run", "--tasks", "needle,haystacks"], "unknown task 'haystacks'"),
    "length not int": (None, ["run", "--tasks", "needle", "--set", "needle.context_lengths=128,abc"],
                       "needle.context_lengths"),
    "unknown task key": (None, ["run", "--tasks", "needle", "--set", "needle.depth=50"],
                         "needle: unknown key 'depth'"),
    "set without =": (None, ["run", "--tasks", "needle", "--set", "needle.depths"], "expected TASK.KEY=VALUE"),
    "set for other task": (None, ["run", "--tasks", "needle", "--set", "mdqa.n_docs=10"], "not among the tasks"),
    "bad metric": (None, ["run", "--tasks", "needle", "--set", "needle.headline_metric=bleu"], "headline_metric"),
    "limit zero": (None, ["run", "--tasks", "needle", "--limit", "0"], "must be at least 1"),
    "unknown only": (None, ["run", "--tasks", "needle", "--only", "ghost"], "no checkpoint 'ghost'"),
    "bad haystack": (None, ["run", "--tasks", "needle", "--set", "needle.haystack=moss", "--limit", "1"],
                     "haystack 'moss' is unknown"),
    "report not a run": (None, ["report", "."], "no run.json"),
    "unknown command": (None, ["fly"], "invalid choice"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tiny_pair, checkpoints_yaml, tmp_path, capsys):
    make, args, expected = CASES[case]
    checkpoints = make(tmp_path, tiny_pair) if make else checkpoints_yaml
    if args[0] in ("validate", "run"):
        args = [*args, "--checkpoints", str(checkpoints)]
    if args[0] == "run":
        args = [*args, "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err, err
    assert "Traceback" not in err


def test_invalid_task_yaml_names_the_file(tmp_path, monkeypatch, checkpoints_yaml, capsys):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "needle.yaml").write_text("depths: [0, 50\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--tasks", "needle", "--checkpoints", str(checkpoints_yaml)]) == 2
    err = capsys.readouterr().err
    assert "needle.yaml: invalid YAML" in err and err.count("\n") == 1


def test_process_exit_code_is_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "meap_bench", "validate", "--checkpoints",
                             str(tmp_path / "none.yaml")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "file not found" in result.stderr
