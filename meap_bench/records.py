"""Per-sample records: one JSON line each (read and written with `jsonlines`), appended and fsynced as
each batch finishes, validated on read."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import jsonlines
from pydantic import ConfigDict, TypeAdapter, ValidationError

from meap_bench.errors import UserError
from meap_bench.faults import fault_point
from meap_bench.rundir import fsync_dir

DUMPS = partial(json.dumps, ensure_ascii=False)
SCHEMA_VERSION = 2  # bump when a field changes meaning; records of another version are refused on read
Status = Literal["ok", "skipped"]


@dataclass
class Record:
    __pydantic_config__ = ConfigDict(extra="forbid")

    run: str
    checkpoint: str
    fingerprint: str  # of the weights, config and tokenizer files that produced this record
    backend: str  # inference backend that produced it (hf, vllm, ...)
    objective: str
    pair: str | None
    task: str
    cell: dict[str, Any]
    sample_id: str  # unique within task: one prompt of one cell
    item_id: str  # the item reused across cells (needle, question, key-value record): the resampling unit
    status: Status
    request_sha256: str
    prompt_sha256: str | None = None
    prompt_tokens: int | None = None
    target_offset: int | None = None
    target: str | None = None
    output: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    skip_reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    capabilities: list[str] = field(default_factory=list)  # the backend's declared capabilities (backends.REGISTRY)
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple[str, ...]:
        return resume_key(self.checkpoint, self.fingerprint, self.backend, self.task, self.sample_id,
                          self.request_sha256)


def resume_key(checkpoint: str, fingerprint: str, backend: str, task: str, sample_id: str, request_sha256: str
               ) -> tuple[str, ...]:
    """What makes a record reusable: same weights, same backend, same task sample, same request (prompt ids
    and generation settings)."""
    return (checkpoint, fingerprint, backend, task, sample_id, request_sha256)


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@cache
def _adapter() -> TypeAdapter[Record]:
    return TypeAdapter(Record)


def parse_record(data: Any, where: str) -> Record:
    """A record from one decoded line; another schema version or a malformed record is a UserError."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}; the file is not a "
                        f"meap-bench records file")
    version = data.get("schema")
    if version != SCHEMA_VERSION:
        raise UserError(f"{where}: record schema {version!r}, but this meap-bench reads schema {SCHEMA_VERSION}; "
                        f"run again into a new run directory (--run-name) or use the meap-bench that wrote it")
    try:
        return _adapter().validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{where}: invalid record field '{loc}' ({first['msg'].lower()}); the file was edited "
                        f"or damaged: restore it or start a new run directory") from None


def complete_lines(handle: Iterable[str]) -> Iterator[str]:
    """The lines of a file up to a last line cut off by a kill (no newline), which is left out."""
    for line in handle:
        if not line.endswith("\n"):
            return
        yield line


def read_records(path: Path) -> list[Record]:
    """All complete records of a file, validated; a last line torn by a kill is ignored (and later cut)."""
    if not path.is_file():
        return []
    records = []
    try:
        with open(path, encoding="utf-8") as handle, jsonlines.Reader(complete_lines(handle)) as reader:
            for number, data in enumerate(reader.iter(skip_empty=True), start=1):
                records.append(parse_record(data, f"{path} record {number}"))
    except jsonlines.InvalidLineError as err:
        raise UserError(f"{path} line {err.lineno}: not valid JSON; the file was edited or damaged: restore "
                        f"it or start a new run directory") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; it is not a meap-bench records file") from None
    check_unique(records, path)
    return records


def check_unique(records: list[Record], path: Path) -> None:
    """One record per sample of one checkpoint's weights: a second one (two processes writing one run
    directory, or a config edited mid-run) would be counted twice by every report."""
    seen: dict[tuple[str, ...], int] = {}
    for number, record in enumerate(records, start=1):
        unit = record.key[:5]  # the key without the request hash
        if unit in seen:
            raise UserError(f"{path}: records {seen[unit]} and {number} are both sample '{record.sample_id}' of "
                            f"{record.checkpoint}/{record.task}: two processes wrote this run directory, or its "
                            f"config changed mid-run; start a new run directory (or delete the later copy)")
        seen[unit] = number


def truncate_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by a killed writer, in place: the complete records before
    it are never rewritten, so no crash during the repair can lose them."""
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            handle.seek(start)
            block = handle.read(end - start)
            if end == size and block.endswith(b"\n"):
                return
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        fault_point("repair", path)
        handle.truncate(end)
        handle.flush()
        os.fsync(handle.fileno())


class RecordWriter:
    """Appends records and fsyncs per batch. Opening it cuts a torn last line left by a killed run, so
    the file only ever holds whole records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.is_file()
        if existed:
            truncate_torn_tail(path)
        self.handle = open(path, "a", encoding="utf-8")
        if not existed:  # the new file's directory entry must survive a power loss too
            fsync_dir(path.parent)
        self.writer = jsonlines.Writer(self.handle, compact=True, dumps=DUMPS)

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self.writer.write_all(asdict(r) for r in records)
            fault_point("write", self.path)
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as err:  # a full disk: what reached the file stays (a torn last line is cut on resume)
            self.failed = True
            raise OSError(err.errno, err.strerror, str(self.path)) from None

    def close(self) -> None:
        try:
            self.writer.close()
            self.handle.close()
        except OSError:
            if not self.failed:  # after a failed write, the same failure again adds nothing
                raise


def replace_records(path: Path, records: list[Record]) -> None:
    """Replace a records file in one step (written beside it, fsynced, renamed over it): a crash leaves
    the old file or the new one, never a mix. Only for moving records aside; runs append."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        with jsonlines.Writer(handle, compact=True, dumps=DUMPS) as writer:
            writer.write_all(asdict(r) for r in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
