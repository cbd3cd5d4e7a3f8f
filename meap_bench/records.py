"""Per-sample records: one JSON line each, appended and flushed as each batch finishes."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    run: str
    checkpoint: str
    fingerprint: str
    objective: str
    pair: str | None
    task: str
    cell: dict[str, Any]
    sample_id: str
    status: str  # "ok" or "skipped"
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

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return resume_key(self.checkpoint, self.fingerprint, self.task, self.sample_id, self.request_sha256)


def resume_key(checkpoint: str, fingerprint: str, task: str, sample_id: str, request_sha256: str
               ) -> tuple[str, str, str, str, str]:
    """What makes a record reusable: same weights, same task sample, same request (prompt ids and
    generation settings)."""
    return (checkpoint, fingerprint, task, sample_id, request_sha256)


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_records(path: Path) -> list[Record]:
    """All complete records of a file; a last line cut off by a kill is ignored (and later rewritten)."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            records.append(Record(**json.loads(line)))
    return records


class RecordWriter:
    """Appends records and fsyncs per batch. Opening it drops a torn last line left by a killed run, so
    the file only ever holds whole records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self.handle = open(path, "a", encoding="utf-8")

    def _drop_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def write(self, records: list[Record]) -> None:
        self.handle.write("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()
