"""Bad input, table-driven: every case asserts its exit code, exactly one line on stderr naming what is
wrong, no traceback, and that nothing was written outside the run directory. The cases run in-process
through `cli.main` (fast); a few run again as real processes (`python -m meap_bench`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from meap_bench.cli import main

REPO = Path(__file__).resolve().parents[1]
GRID = ["--set", "needle.context_lengths=64,256", "--set", "needle.haystack=noise", "--set", "needle.needle=sandwich",
        "--limit", "1", "--device", "cpu"]
RUN_DIRS = ("case", "good")  # the run directories a case may write into (under out/)


class Env:
    """One case's sandbox: `tmp` holds everything a case may create; `out` the run directories."""

    def __init__(self, tmp: Path, pair: dict[str, Path], checkpoints: Path, good_run: Path) -> None:
        self.tmp, self.pair, self.checkpoints, self.good_run = tmp, pair, checkpoints, good_run
        self.out = tmp / "out"
        self.out.mkdir()

    def run(self, *extra: str, checkpoints: Path | None = None, name: str | None = "case") -> list[str]:
        named = ["--run-name", name] if name is not None else []
        return ["run", "--tasks", "needle", "--checkpoints", str(checkpoints or self.checkpoints), "--out",
                str(self.out), *named, *GRID, *extra]

    def yaml(self, text: str | bytes) -> Path:
        path = self.tmp / "ck.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def model(self) -> Path:
        """A private copy of a tiny checkpoint, to damage."""
        folder = self.tmp / "models" / "m"
        shutil.copytree(self.pair["ntp"], folder)
        return folder

    def good(self) -> Path:
        """A private copy of a finished run, to damage."""
        run = self.out / "good"
        shutil.copytree(self.good_run, run)
        return run


def entry(name: str, path: object, objective: str | None = "ntp", pair: str | None = "p", extra: str = "") -> str:
    text = f"- name: {name}\n  path: {path}\n"
    text += f"  objective: {objective}\n" if objective else ""
    text += f"  pair: {pair}\n" if pair else ""
    return text + extra


def ck(text: Callable[[Env], str | bytes], *extra: str) -> Callable[[Env], list[str]]:
    """A run with the checkpoints YAML `text(env)`."""
    return lambda e: e.run(*extra, checkpoints=e.yaml(text(e)))


def with_model(damage: Callable[[Path], object], **entry_args) -> Callable[[Env], list[str]]:
    """A run on a copy of the tiny NTP checkpoint damaged by `damage(folder)`."""
    def build(e: Env) -> list[str]:
        folder = e.model()
        damage(folder)
        return e.run(checkpoints=e.yaml(entry("m", folder, **entry_args)))
    return build


def task_run(*overrides: str) -> Callable[[Env], list[str]]:
    """A run of the task the first override names (mdqa, kv), with those overrides."""
    task = overrides[0].split(".")[0]
    return lambda e: ["run", "--tasks", task, "--checkpoints", str(e.checkpoints), "--out", str(e.out), "--run-name",
                      "case", "--limit", "1", "--device", "cpu", *[a for o in overrides for a in ("--set", o)]]


def sets(*overrides: str) -> Callable[[Env], list[str]]:
    return lambda e: e.run(*[a for o in overrides for a in ("--set", o)])


def haystack_dir(files: dict[str, bytes]) -> Callable[[Env], list[str]]:
    def build(e: Env) -> list[str]:
        folder = e.tmp / "hay"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return e.run("--set", f"needle.haystack=dir:{folder}")
    return build


def records(change: Callable[[list[bytes]], list[bytes]], command: str) -> Callable[[Env], list[str]]:
    """`report` or `run --resume` on a finished run whose records.jsonl lines were changed."""
    def build(e: Env) -> list[str]:
        run = e.good()
        path = run / "records.jsonl"
        path.write_bytes(b"".join(change(path.read_bytes().splitlines(keepends=True))))
        return ["report", str(run)] if command == "report" else ["run", "--resume", str(run)]
    return build


def record(change: Callable[[dict], object], index: int = 1) -> Callable[[list[bytes]], list[bytes]]:
    """Lines with record `index` decoded, changed in place and encoded again."""
    def edit(lines: list[bytes]) -> list[bytes]:
        data = json.loads(lines[index])
        change(data)
        return [*lines[:index], (json.dumps(data) + "\n").encode(), *lines[index + 1:]]
    return edit


def run_json(change: Callable[[dict], object], command: str) -> Callable[[Env], list[str]]:
    """`report` or `run --resume` on a finished run whose run.json was changed (`change` edits the dict
    in place, or returns bytes to write instead)."""
    def build(e: Env) -> list[str]:
        run = e.good()
        path = run / "run.json"
        data = json.loads(path.read_text())
        replaced = change(data)
        path.write_bytes(replaced if isinstance(replaced, bytes) else json.dumps(data).encode())
        return ["report", str(run)] if command == "report" else ["run", "--resume", str(run)]
    return build


def resume_with(*extra: str) -> Callable[[Env], list[str]]:
    return lambda e: ["run", "--resume", str(e.good()), *extra]


def task_of(data: dict) -> dict:
    return data["tasks"]["needle"]


def write_json(name: str, text: bytes) -> Callable[[Path], object]:
    return lambda folder: (folder / name).write_bytes(text)


def truncate(name: str, size: int) -> Callable[[Path], object]:
    return lambda folder: os.truncate(folder / name, size)


def custom_needle(**fields: str) -> Callable[[Env], list[str]]:
    spec = {"fact": "The code is {value}.", "question": "What is the code?", "answer_prefix": "The code is",
            "answer": "{value}", **fields}
    return sets("needle.needle={" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in spec.items()) + "}")


RECORD_DAMAGE: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str]] = {
    "garbage line": (lambda ls: [*ls[:2], b"not json at all\n", *ls[2:]], "records.jsonl line 3: not valid JSON"),
    "record cut in the middle": (lambda ls: [ls[0], ls[1][:50] + b"\n", *ls[2:]], "not valid JSON"),
    "null line": (lambda ls: [ls[0], b"null\n", *ls[1:]], "not valid JSON"),
    "array line": (lambda ls: [ls[0], b"[1, 2]\n", *ls[1:]], "expected a JSON object, got list"),
    "string line": (lambda ls: [ls[0], b'"record"\n', *ls[1:]], "expected a JSON object, got str"),
    "number line": (lambda ls: [ls[0], b"42\n", *ls[1:]], "expected a JSON object, got int"),
    "non-UTF-8 bytes": (lambda ls: [ls[0], b"\xff\xfe\xfa\n", *ls[1:]], "not UTF-8 text"),
    "NUL bytes": (lambda ls: [ls[0], b"\x00\x00\x00\n", *ls[1:]], "not valid JSON"),
    "missing key": (record(lambda d: d.pop("task")), "invalid record field 'task'"),
    "unknown key": (record(lambda d: d.update(colour="red")), "invalid record field 'colour'"),
    "old schema": (record(lambda d: d.update(schema=1)), "record schema 1"),
    "no schema": (record(lambda d: d.pop("schema")), "record schema None"),
    "unknown status": (record(lambda d: d.update(status="done")), "invalid record field 'status'"),
    "score not a number": (record(lambda d: d["scores"].update(contains="yes")), "'scores.contains'"),
    "scores a list": (record(lambda d: d.update(scores=[1, 2])), "'scores'"),
    "cell a list": (record(lambda d: d.update(cell=[1, 2])), "'cell'"),
    "sample id a number": (record(lambda d: d.update(sample_id=5)), "'sample_id'"),
    "checkpoint null": (record(lambda d: d.update(checkpoint=None)), "'checkpoint'"),
    "fingerprint a number": (record(lambda d: d.update(fingerprint=12)), "'fingerprint'"),
    "seconds a word": (record(lambda d: d.update(seconds="fast")), "'seconds'"),
    "meta a number": (record(lambda d: d.update(meta=3)), "'meta'"),
    "duplicate record": (lambda ls: [*ls, ls[0]], "are both sample"),
    "sample twice, other request": (lambda ls: [*ls, ls[0].replace(b'"request_sha256": "', b'"request_sha256": "0')],
                                    "are both sample"),
}

RUN_JSON_DAMAGE: dict[str, tuple[Callable[[dict], object], str]] = {
    "not JSON": (lambda d: b"{", "run.json: not valid JSON"),
    "cut in half": (lambda d: json.dumps(d).encode()[:100], "run.json: not valid JSON"),
    "empty file": (lambda d: b"", "run.json: not valid JSON"),
    "a list": (lambda d: b"[]", "run.json: expected a JSON object, got list"),
    "non-UTF-8": (lambda d: b"\xff" + json.dumps(d).encode(), "run.json: not UTF-8 text"),
    "missing tasks": (lambda d: d.pop("tasks"), "missing required key 'tasks'"),
    "tasks a list": (lambda d: d.update(tasks=["needle"]), "run.tasks"),
    "no tasks": (lambda d: d.update(tasks={}), "run.tasks"),
    "task name a path": (lambda d: d["tasks"].update({"../x": {}}), "task name '../x'"),
    "missing checkpoints": (lambda d: d.pop("checkpoints"), "missing required key 'checkpoints'"),
    "checkpoint name a path": (lambda d: d["checkpoints"][0].update(name="../../evil"), "must be a plain name"),
    "pair a path": (lambda d: d["checkpoints"][0].update(pair="a/b"), "must be a plain name"),
    "checkpoint unknown key": (lambda d: d["checkpoints"][0].update(colour="red"), "unknown key 'colour'"),
    "checkpoint batch_size 0": (lambda d: d["checkpoints"][0].update(batch_size=0), "batch_size"),
    "checkpoint not a mapping": (lambda d: d["checkpoints"].append("x"), "run.checkpoints"),
    "seed a word": (lambda d: d.update(seed="abc"), "run.seed"),
    "limit negative": (lambda d: d.update(limit=-1), "run.limit"),
    "missing backend": (lambda d: d.pop("backend"), "missing required key 'backend'"),
    "fingerprints a list": (lambda d: d.update(fingerprints=[]), "run.fingerprints"),
}

RESUME_ONLY: dict[str, tuple[Callable[[dict], object], str]] = {  # report reads records, not task configs
    "unknown task": (lambda d: d["tasks"].update(haystacks={}), "unknown task 'haystacks'"),
    "task config unknown key": (lambda d: task_of(d).update(colour="red"), "needle: unknown key 'colour'"),
    "task config bad value": (lambda d: task_of(d).update(depths=[200]), "needle.depths"),
    "edited seed": (lambda d: d.update(seed=7), "does not match its records"),
    "edited needle": (lambda d: task_of(d).update(needle="magic-number"), "does not match its records"),
    "edited lengths": (lambda d: task_of(d).update(context_lengths=[256, 320]), "does not match its records"),
    "edited max_new_tokens": (lambda d: task_of(d).update(max_new_tokens=8), "does not match its records"),
}

CASES: dict[str, tuple[Callable[[Env], list[str]], int, str]] = {
    # 4. names and paths that would write outside the run directory
    "run name absolute": (lambda e: e.run(name=str(e.tmp / "abs")), 2, "--run-name"),
    "run name parent": (lambda e: e.run(name="../escape"), 2, "must be a plain name"),
    "run name grandparent": (lambda e: e.run(name="../../x"), 2, "must be a plain name"),
    "run name with a slash": (lambda e: e.run(name="a/b"), 2, "must be a plain name"),
    "run name dot dot": (lambda e: e.run(name=".."), 2, "must be a plain name"),
    "run name dot": (lambda e: e.run(name="."), 2, "must be a plain name"),
    "run name empty": (lambda e: e.run(name=""), 2, "must be a plain name"),
    "run name hidden": (lambda e: e.run(name=".hidden"), 2, "must be a plain name"),
    "run name with a space": (lambda e: e.run(name="my run"), 2, "must be a plain name"),
    "run name with a newline": (lambda e: e.run(name="a\nb"), 2, "must be a plain name"),
    "run name too long": (lambda e: e.run(name="x" * 200), 2, "at most 128 characters"),
    "out is a file": (lambda e: [*e.run(), "--out", str(e.yaml("x"))], 2, "it is a file, not a folder"),
    "run directory is a file": (lambda e: (e.out / "case").write_text("x") and e.run(), 2, "is a file, not a run"),
    "checkpoint name parent": (ck(lambda e: entry("../x", e.pair["ntp"])), 2, "'../x'"),
    "checkpoint name with a slash": (ck(lambda e: entry("org/model", e.pair["ntp"])), 2, "must be a plain name"),
    "checkpoint name absolute": (ck(lambda e: entry("/etc/passwd", e.pair["ntp"])), 2, "must be a plain name"),
    "checkpoint name dot dot": (ck(lambda e: entry('".."', e.pair["ntp"])), 2, "must be a plain name"),
    "checkpoint name empty": (ck(lambda e: entry('""', e.pair["ntp"])), 2, "must be a plain name"),
    "checkpoint name a number": (ck(lambda e: entry("12", e.pair["ntp"])), 2, "name"),
    "pair name parent": (ck(lambda e: entry("a", e.pair["ntp"], pair="../../p")), 2, "must be a plain name"),
    "pair name with a slash": (ck(lambda e: entry("a", e.pair["ntp"], pair="x/y")), 2, "must be a plain name"),
    "resume a missing folder": (lambda e: ["run", "--resume", str(e.tmp / "none")], 2, "no run.json there"),
    "resume a file": (lambda e: ["run", "--resume", str(e.yaml("x"))], 2, "no run.json there"),
    "report a missing folder": (lambda e: ["report", str(e.tmp / "none")], 2, "no run.json there"),
    # 2/3. options that --resume would ignore
    **{f"resume with {flag}": (resume_with(flag, value), 2, f"{flag} cannot be changed on resume") for flag, value in [
        ("--tasks", "needle"), ("--set", "needle.depths=0,50"), ("--seed", "3"), ("--limit", "2"),
        ("--only", "tiny-ntp"), ("--run-name", "other"), ("--out", "elsewhere"), ("--checkpoints", "ck.yaml"),
        ("--backend", "hf")]},
    "run with another config": (lambda e: (e.good() and e.run("--seed", "5", name="good")), 2,
                                "holds a run with another config"),
    # 5. loops over user-given sizes
    "haystack of one empty file": (haystack_dir({"a.txt": b""}), 2, "hold no text"),
    "haystack of blank files": (haystack_dir({"a.txt": b"  \n\n", "b.txt": b"\t"}), 2, "hold no text"),
    "haystack without text files": (haystack_dir({"a.md": b"text."}), 2, "no .txt files"),
    "haystack folder missing": (lambda e: e.run("--set", f"needle.haystack=dir:{e.tmp / 'none'}"), 2,
                                "no .txt files"),
    "ten million distractors": (sets("needle.distractors=10000000"), 2, "needle.distractors"),
    "huge samples per cell": (sets("needle.samples_per_cell=100000000"), 2, "needle.samples_per_cell"),
    "huge depth grid": (sets("needle.depths={min: 0, max: 100, intervals: 100000000}"), 2, "intervals"),
    "huge length grid": (sets("needle.context_lengths={min: 64, max: 128, intervals: 100000000}"), 2, "intervals"),
    "huge auto lengths": (sets("needle.auto_lengths=1000000000"), 2, "needle.auto_lengths"),
    "a million documents": (task_run("mdqa.n_docs=1000000"), 2,
                            "mdqa.n_docs"),
    "a billion questions": (task_run("mdqa.questions=1000000000"), 2,
                            "mdqa.questions"),
    "a hundred million pairs": (task_run("kv.n_pairs=100000000"), 2,
                                "kv.n_pairs"),
    "a billion kv records": (task_run("kv.samples_per_cell=1000000000"), 2,
                             "kv.samples_per_cell"),
    "a million auto sizes": (task_run("kv.auto_pairs=1000000"), 2,
                             "kv.auto_pairs"),
    # 6. values that make no sense
    "depth below 0": (sets("needle.depths=-10,50"), 2, "needle.depths"),
    "depth above 100": (sets("needle.depths=0,150"), 2, "needle.depths"),
    "depth grid below 0": (sets("needle.depths={min: -5, max: 100, intervals: 3}"), 2, "0..100"),
    "depth grid above 100": (sets("needle.depths={min: 0, max: 200, intervals: 3}"), 2, "0..100"),
    "depth grid reversed": (sets("needle.depths={min: 90, max: 10, intervals: 3}"), 2, "min <= max"),
    "no depths": (sets("needle.depths=[]"), 2, "needle.depths"),
    "no context lengths": (sets("needle.context_lengths=[]"), 2, "needle.context_lengths"),
    "context length 0": (sets("needle.context_lengths=0,128"), 2, "needle.context_lengths"),
    "context length negative": (sets("needle.context_lengths=-64,128"), 2, "needle.context_lengths"),
    "length grid from 0": (sets("needle.context_lengths={min: 0, max: 128, intervals: 3}"), 2, "positive"),
    "samples per cell 0": (sets("needle.samples_per_cell=0"), 2, "needle.samples_per_cell"),
    "max new tokens 0": (sets("needle.max_new_tokens=0"), 2, "needle.max_new_tokens"),
    "distractors negative": (sets("needle.distractors=-1"), 2, "needle.distractors"),
    "auto lengths 0": (sets("needle.auto_lengths=0"), 2, "needle.auto_lengths"),
    "no documents": (task_run("mdqa.n_docs=[]"), 2, "mdqa.n_docs"),
    "zero documents": (task_run("mdqa.n_docs=0"), 2, "mdqa.n_docs"),
    "no positions": (task_run("mdqa.positions=[]"), 2, "mdqa.positions"),
    "zero questions": (task_run("mdqa.questions=0"), 2, "mdqa.questions"),
    "no pairs": (task_run("kv.n_pairs=[]"), 2, "kv.n_pairs"),
    "position 0": (task_run("kv.positions=0"), 2, "kv.positions"),
    "batch size 0": (ck(lambda e: entry("a", e.pair["ntp"], extra="  batch_size: 0\n")), 2, "batch_size"),
    "batch size negative": (ck(lambda e: entry("a", e.pair["ntp"], extra="  batch_size: -4\n")), 2, "batch_size"),
    "batch size fractional": (ck(lambda e: entry("a", e.pair["ntp"], extra="  batch_size: 2.5\n")), 2,
                              "batch_size"),
    "max length negative": (ck(lambda e: entry("a", e.pair["ntp"], extra="  max_length: -5\n")), 2, "max_length"),
    "max length 0": (ck(lambda e: entry("a", e.pair["ntp"], extra="  max_length: 0\n")), 2, "max_length"),
    "unknown dtype": (ck(lambda e: entry("a", e.pair["ntp"], extra="  dtype: float8\n")), 2, "dtype"),
    "chat template maybe": (ck(lambda e: entry("a", e.pair["ntp"], extra="  chat_template: maybe\n")), 2,
                            "chat_template"),
    "limit negative": (lambda e: e.run("--limit", "-1"), 2, "--limit"),
    "limit a word": (lambda e: e.run("--limit", "many"), 2, "--limit"),
    "seed a word": (lambda e: e.run("--seed", "abc"), 2, "--seed"),
    "unknown device": (lambda e: e.run("--device", "tpu"), 2, "--device"),
    # 7. files that are not what they should be
    "checkpoints binary": (ck(lambda e: bytes(range(256)) * 4), 2, "ck.yaml: not UTF-8 text"),
    "checkpoints latin-1": (ck(lambda e: "- name: caf\xe9\n".encode("latin-1")), 2, "ck.yaml: not UTF-8 text"),
    "checkpoints control characters": (ck(lambda e: b"- name: a\x00b\n"), 2, "ck.yaml: not a text file"),
    "checkpoints empty": (ck(lambda e: ""), 2, "expected a non-empty YAML list"),
    "checkpoints only a comment": (ck(lambda e: "# nothing\n"), 2, "expected a non-empty YAML list"),
    "checkpoints a scalar": (ck(lambda e: "tiny\n"), 2, "expected a non-empty YAML list"),
    "checkpoints a list of strings": (ck(lambda e: "- tiny\n"), 2, "must be a mapping"),
    "checkpoints a list of lists": (ck(lambda e: "- [a, b]\n"), 2, "must be a mapping"),
    "checkpoints bad indentation": (ck(lambda e: "- name: a\n path: b\n  objective: ntp\n"), 2, "invalid YAML"),
    "checkpoint without path": (ck(lambda e: "- name: a\n"), 2, "missing required key 'path'"),
    "checkpoints missing": (lambda e: e.run(checkpoints=e.tmp / "absent.yaml"), 2, "file not found"),
    "weights cut short": (with_model(truncate("model.safetensors", 5000)), 2, "model.safetensors is damaged"),
    "weights header only": (with_model(truncate("model.safetensors", 8)), 2, "model.safetensors is damaged"),
    "weights empty": (with_model(truncate("model.safetensors", 0)), 2, "model.safetensors is damaged"),
    "weights random bytes": (with_model(write_json("model.safetensors", bytes(range(256)) * 8)), 2,
                             "model.safetensors is damaged"),
    "train metadata garbage": (with_model(write_json("meap_bench_train.json", b"{objective: meap"), objective=None),
                               2, "meap_bench_train.json: not valid JSON"),
    "train metadata binary": (with_model(write_json("meap_bench_train.json", b"\xff\xfe\x00"), objective=None), 2,
                              "meap_bench_train.json: not valid JSON"),
    "train metadata a list": (with_model(write_json("meap_bench_train.json", b"[1]"), objective=None), 2,
                              "no objective"),
    "custom needle unknown placeholder": (custom_needle(fact="The code for {name} is {value}."), 2,
                                          "unknown placeholder {name}"),
    "custom needle stray opening brace": (custom_needle(question="What is the code {?"), 2, "literal brace"),
    "custom needle stray closing brace": (custom_needle(answer_prefix="The code } is"), 2, "literal brace"),
    "custom needle positional field": (custom_needle(answer="{0}"), 2, "unknown placeholder {0}"),
    "custom needle attribute": (custom_needle(fact="The code is {value.real}."), 2, "unknown placeholder"),
    "custom needle in a distractor": (custom_needle(distractors=["{other}"]), 2, "unknown placeholder {other}"),
    # 8. messages that must name the real problem
    "mistyped path or hub id": (ck(lambda e: entry("a", "models/tiny-ntpp")), 2, "not a local folder"),
    "mistyped path under an existing folder": (lambda e: (e.tmp / "checkpoints").mkdir() or e.run(
        checkpoints=e.yaml(entry("a", "checkpoints/tiny-ntpp"))), 2, "path 'checkpoints/tiny-ntpp' does not exist"),
    "mistyped absolute path": (ck(lambda e: entry("a", e.tmp / "nowhere")), 2, "does not exist"),
    "mistyped relative path": (ck(lambda e: entry("a", "./nowhere")), 2, "does not exist"),
    "mistyped home path": (ck(lambda e: entry("a", "~/surely-not-here-meap")), 2, "does not exist"),
    "mistyped tokenizer path": (ck(lambda e: entry("a", e.pair["ntp"], extra=f"  tokenizer: {e.tmp}/tok\n")), 2,
                                "tokenizer"),
    "config.json not JSON": (with_model(write_json("config.json", b"{\"model_type\": ")), 2,
                             "config.json is not valid JSON"),
    "config.json a list": (with_model(write_json("config.json", b"[]")), 2, "config.json has no 'model_type'"),
    "config.json without model type": (with_model(write_json("config.json", b"{}")), 2, "has no 'model_type'"),
    "config.json missing": (with_model(lambda f: (f / "config.json").unlink()), 2, "has no config.json"),
    **{f"report: records {name}": (records(change, "report"), 2, expect)
       for name, (change, expect) in RECORD_DAMAGE.items()},
    **{f"resume: records {name}": (records(change, "resume"), 2, expect)
       for name, (change, expect) in RECORD_DAMAGE.items()},
    "report: records empty": (records(lambda ls: [], "report"), 2, "holds no records yet"),
    **{f"report: run.json {name}": (run_json(change, "report"), 2, expect)
       for name, (change, expect) in RUN_JSON_DAMAGE.items()},
    **{f"resume: run.json {name}": (run_json(change, "resume"), 2, expect)
       for name, (change, expect) in RUN_JSON_DAMAGE.items()},
    **{f"resume: run.json {name}": (run_json(change, "resume"), 2, expect)
       for name, (change, expect) in RESUME_ONLY.items()},
}
PROCESS_CASES = ["checkpoints binary", "run name parent", "report: records garbage line"]


def test_the_table_covers_every_class():
    assert len(CASES) >= 100


@pytest.fixture(scope="module")
def good_run(checkpoints_yaml, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good")
    args = ["run", "--tasks", "needle", "--checkpoints", str(checkpoints_yaml), "--out", str(out), "--run-name",
            "good", *GRID]
    assert main(args) == 0
    return out / "good"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` outside the run directories, with size and modification time."""
    allowed = {root / "out" / name for name in RUN_DIRS}
    found = {}
    for path in root.rglob("*"):
        if any(path == a or a in path.parents for a in allowed):
            continue
        stat = path.lstat()  # a folder's own size and time change with its entries: its presence is what counts
        found[str(path.relative_to(root))] = (0, 0) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return found


def prepare(case: str, tmp_path: Path, tiny_pair, checkpoints_yaml, good_run) -> list[str]:
    env = Env(tmp_path, tiny_pair, checkpoints_yaml, good_run)
    return CASES[case][0](env)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tmp_path, tiny_pair, checkpoints_yaml, good_run, capsys, monkeypatch):
    _, code, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    argv = prepare(case, tmp_path, tiny_pair, checkpoints_yaml, good_run)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    assert expected in err, err
    after = snapshot(tmp_path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"written outside the run directory: {changed}"


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_bad_input_in_a_real_process(case, tmp_path, tiny_pair, checkpoints_yaml, good_run):
    _, code, expected = CASES[case]
    argv = prepare(case, tmp_path, tiny_pair, checkpoints_yaml, good_run)
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-m", "meap_bench", *argv], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == code
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    after = snapshot(tmp_path)
    assert not sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def test_an_allowed_edit_of_run_json_resumes(tmp_path, tiny_pair, checkpoints_yaml, good_run, capsys):
    """A higher limit asks for more samples per cell: the records are a subset of what the edited config
    makes, so the resume adds the missing samples instead of refusing."""
    argv = run_json(lambda d: d.update(limit=2), "resume")(Env(tmp_path, tiny_pair, checkpoints_yaml, good_run))
    assert main(argv) == 0
    capsys.readouterr()


def test_blank_lines_in_records_are_accepted(tmp_path, tiny_pair, checkpoints_yaml, good_run, capsys):
    run = Env(tmp_path, tiny_pair, checkpoints_yaml, good_run).good()
    with open(run / "records.jsonl", "a") as handle:
        handle.write("\n\n")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().err == ""


def test_names_read_from_records_stay_inside_the_run_directory(tmp_path, tiny_pair, checkpoints_yaml, good_run,
                                                               capsys):
    """Records edited to carry path-like checkpoint names: the report still writes only into the run
    directory (the names are made plain file names, and records of a checkpoint run.json does not name are
    left out with a warning)."""
    run = Env(tmp_path, tiny_pair, checkpoints_yaml, good_run).good()
    path = run / "records.jsonl"
    path.write_text(path.read_text().replace('"checkpoint": "tiny-ntp"', '"checkpoint": "../../../evil"'))
    before = snapshot(tmp_path)
    assert main(["report", str(run)]) == 0
    assert "left out" in capsys.readouterr().err
    after = snapshot(tmp_path)
    assert not sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not any("evil" in p.name for p in (run / "figures").iterdir())


def test_dotted_checkpoint_names_get_their_own_figures(tiny_pair, tmp_path, capsys):
    """`tiny-3.1` and `tiny-3.2` once both became `..._tiny-3.png` (the dot read as a suffix)."""
    checkpoints = tmp_path / "ck.yaml"
    checkpoints.write_text(entry("tiny-3.1", tiny_pair["ntp"], pair="p.1")
                           + entry("tiny-3.2", tiny_pair["meap"], "meap", pair="p.1"))
    args = ["run", "--tasks", "needle", "--checkpoints", str(checkpoints), "--out", str(tmp_path), "--run-name",
            "dots", *GRID]
    assert main(args) == 0
    capsys.readouterr()
    figures = {p.name for p in (tmp_path / "dots" / "figures").iterdir()}
    assert {"needle_heatmap_tiny-3.1.png", "needle_heatmap_tiny-3.2.png", "needle_pair_p.1.pdf"} <= figures
