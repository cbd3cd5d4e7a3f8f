"""checkpoints.yaml and task YAML: schemas, `--set` overrides and one-line validation errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_serializer,
)

from meap_bench.errors import UserError
from meap_bench.rundir import name_problem

TRAIN_METADATA = "meap_bench_train.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


T = TypeVar("T")


def one_as_list(value: Any) -> Any:
    """A single scalar where a list is expected is a one-element list (`--set needle.depths=50`)."""
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


OneOrMore = Annotated[list[T], BeforeValidator(one_as_list)]  # the type of every list-valued setting


class Strict(BaseModel):
    """Base for every config schema: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class VLLMSettings(Strict):
    """Engine settings of `--backend vllm` for one checkpoint (vLLM's `LLM` arguments of the same names)."""

    tensor_parallel_size: PositiveInt = 1
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: PositiveInt | None = None  # default: the checkpoint's max_length, else its config's
    data_parallel_size: PositiveInt = 1


class Checkpoint(Strict):
    name: str
    path: str
    objective: Literal["ntp", "meap"] | None = None
    pair: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_length: PositiveInt | None = None
    tokenizer: str | None = None
    chat_template: bool = False
    batch_size: PositiveInt = 8
    vllm: VLLMSettings | None = None
    device_map: str | None = None  # HF backend: accelerate placement across the machine's GPUs ("auto", "balanced")

    @field_validator("name", "pair")
    @classmethod
    def plain_name(cls, value: str | None) -> str | None:
        """Names go into file names (figures, lm_eval/): they must not be able to leave the run directory."""
        problem = name_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler: Any) -> dict[str, Any]:
        """Leave out `vllm: null` and `device_map: null`, so that the identity of runs recorded before they existed
        is unchanged."""
        data = handler(self)
        for key in ("vllm", "device_map"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: file not found; check the path")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); it is not a YAML file: check the path") from None
    except yaml.reader.ReaderError as err:
        raise UserError(f"{path}: not a text file (control character at byte {err.position}); check the path"
                        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from None


def error_location(error: Any) -> str:
    """`a.b.0` from a pydantic error's location, without the names pydantic gives union members."""
    parts = [str(p) for p in error["loc"]]
    return ".".join(p for p in parts if "[" not in p and not p[:1].isupper() and not p.startswith("function-"))


def describe_validation_error(err: ValidationError, prefix: str) -> str:
    """The first problem of a pydantic error as one line: where, what value, what was expected."""
    first = max(err.errors(), key=lambda e: len(e["loc"]))  # in a union, the member the input was meant for
    loc = error_location(first)
    if first["type"] == "extra_forbidden":
        return f"{prefix}: unknown key '{loc}'"
    if first["type"] == "missing":
        return f"{prefix}: missing required key '{loc}'"
    value = json.dumps(first.get("input"), default=str)
    return f"{prefix}.{loc}: {value} is invalid ({first['msg'].lower()})"


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, source: str, prefix: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        allowed = ", ".join(model.model_fields)
        hint = f"; allowed keys: {allowed}" if err.errors()[0]["type"] == "extra_forbidden" else ""
        raise UserError(f"{source}: {describe_validation_error(err, prefix)}{hint}") from None


def load_checkpoints(path: Path) -> list[Checkpoint]:
    """Read and check checkpoints.yaml; relative paths are taken from the file's folder."""
    data = read_yaml(path)
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty YAML list of checkpoints (- name: ..., path: ...)")
    checkpoints: list[Checkpoint] = []
    for index, entry in enumerate(data):
        label = entry.get("name", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
        if not isinstance(entry, dict):
            raise UserError(f"{path}: entry {label} must be a mapping with name and path")
        ckpt = validate(Checkpoint, entry, str(path), f"checkpoint '{label}'")
        checkpoints.append(resolve_checkpoint(ckpt, path))
    check_names_and_pairs(checkpoints, path)
    return checkpoints


def resolve_local(value: str, base: Path) -> str:
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    return str(candidate) if candidate.exists() else value


def looks_local(value: str, base: Path) -> bool:
    """A path the user meant as a folder, not a hub id: absolute, `./`, `~`, more than one `/`, or a first
    component that exists next to checkpoints.yaml (`checkpoints/tiny-ntpp` when `checkpoints/` exists)."""
    if not HUB_ID.match(value) or value.startswith(("/", ".", "~")) or value.count("/") > 1:
        return True
    first = value.split("/", 1)[0]
    return (base / first).exists() or Path(first).exists()


def check_model_folder(path: Path, where: str) -> None:
    """config.json must be a JSON object naming its model type; a broken one is named as such (not left to
    fail later as a tokenizer or weights problem)."""
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{where}: '{path}' has no config.json; point path at a Hugging Face model folder")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        detail = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{where}: {config} is not valid JSON ({detail}); restore the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise UserError(f"{where}: {config} has no 'model_type'; it is not a transformers config: restore it")


def resolve_checkpoint(ckpt: Checkpoint, source: Path) -> Checkpoint:
    base = source.parent
    path = resolve_local(ckpt.path, base)
    tokenizer = resolve_local(ckpt.tokenizer, base) if ckpt.tokenizer else None
    where = f"{source}: checkpoint '{ckpt.name}'"
    for key, value, resolved in (("path", ckpt.path, path), ("tokenizer", ckpt.tokenizer, tokenizer)):
        if value and not Path(resolved).exists() and looks_local(value, base):
            raise UserError(f"{where}: {key} '{value}' does not exist (taken from {base.resolve()}); fix the path, "
                            f"or give a hub id as org/name")
    if Path(path).exists():
        check_model_folder(Path(path), where)
    objective = ckpt.objective or train_objective(Path(path))
    if objective is None:
        raise UserError(f"{where}: no objective; add 'objective: ntp' or 'objective: meap'")
    return ckpt.model_copy(update={"path": path, "tokenizer": tokenizer, "objective": objective})


def train_objective(path: Path) -> Literal["ntp", "meap"] | None:
    """The objective recorded by our trainer, so checkpoints.yaml may leave it out."""
    meta = path / TRAIN_METADATA
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{meta}: not valid JSON; restore it, or add 'objective: ntp|meap' to the checkpoint's "
                        f"entry and delete the file") from None
    objective = data.get("objective") if isinstance(data, dict) else None
    return objective if objective in ("ntp", "meap") else None


def check_names_and_pairs(checkpoints: list[Checkpoint], source: Path) -> None:
    seen: set[str] = set()
    for ckpt in checkpoints:
        if ckpt.name in seen:
            raise UserError(f"{source}: duplicate checkpoint name '{ckpt.name}'; give each entry its own name")
        seen.add(ckpt.name)
    pairs: dict[str, list[Checkpoint]] = {}
    for ckpt in checkpoints:
        if ckpt.pair:
            pairs.setdefault(ckpt.pair, []).append(ckpt)
    for label, members in pairs.items():
        for objective in ("ntp", "meap"):
            same = [m.name for m in members if m.objective == objective]
            if len(same) > 1:
                raise UserError(
                    f"{source}: pair '{label}' has {len(same)} {objective.upper()} members ({', '.join(same)}); "
                    f"a pair joins one NTP checkpoint with its MEAP twin: give the others another pair label"
                )


def pairs_of(checkpoints: list[Checkpoint]) -> dict[str, dict[str, str]]:
    """{pair label: {"ntp": name, "meap": name}} for complete pairs only."""
    pairs: dict[str, dict[str, str]] = {}
    for ckpt in checkpoints:
        if ckpt.pair and ckpt.objective:
            pairs.setdefault(ckpt.pair, {})[ckpt.objective] = ckpt.name
    return {label: members for label, members in pairs.items() if set(members) == {"ntp", "meap"}}


def parse_override(text: str) -> tuple[str, str, Any]:
    """`task.key=value` -> (task, key, value), the value read by `parse_value`."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--set '{text}': expected TASK.KEY=VALUE, e.g. --set needle.context_lengths=128,256")
    lhs, raw = text.split("=", 1)
    task, key = lhs.split(".", 1)
    return task, key, parse_value(raw, text)


def parse_value(raw: str, context: str) -> Any:
    """The value of a `--set` (evaluation or training): `a,b` is a list, anything else a YAML scalar (or a
    YAML flow list/mapping when it starts with `[` or `{`)."""
    if "," in raw and not raw.lstrip().startswith(("[", "{")):
        return [parse_scalar(part, context) for part in raw.split(",")]
    return parse_scalar(raw, context)


def parse_scalar(raw: str, context: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UserError(f"--set '{context}': cannot parse value '{raw}'") from None


def apply_override(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set: '{dotted}' goes through '{part}', which is not a mapping")
    node[last] = value
