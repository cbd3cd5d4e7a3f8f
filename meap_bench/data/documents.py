"""Documents with reference outputs (summaries or answers) for the hallucination task: from the Hugging Face hub
through `datasets`, or from a local JSON/JSONL file, with a field mapping onto `document`, `reference` and an
optional `question`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meap_bench.errors import UserError


@dataclass(frozen=True)
class DocItem:
    item_id: str  # stable within its source: the row's id field, else its row number
    document: str
    reference: str
    question: str | None = None


def flatten(value: Any) -> str:
    """A field as text: strings as they are, lists (answers, sentences) and mappings (HotpotQA's context) joined
    line by line."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(filter(None, (flatten(v) for v in value.values())))
    if isinstance(value, list | tuple):
        return "\n".join(filter(None, (flatten(v) for v in value)))
    return str(value)


def read_rows(path: Path, where: str) -> list[dict]:
    """Rows of a .jsonl (one object a line) or .json (a list of objects) file."""
    if not path.is_file():
        raise UserError(f"{where}: no file {path}; give the path of a .json or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
        rows = ([json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl"
                else json.loads(text))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: {path} is not valid JSON{' lines' if path.suffix == '.jsonl' else ''} ({err})"
                        ) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{where}: {path} must hold JSON objects (a .jsonl line each, or a .json list)")
    return rows


def hub_rows(hub: str, config: str | None, split: str, where: str, revision: str | None = None) -> list[dict]:
    """Rows of a hub dataset (or a local dataset folder). `revision` picks a branch: `refs/convert/parquet` is the
    hub's Parquet export, the way to read a dataset whose main branch is a loading script, which `datasets` >= 4 no
    longer runs."""
    import datasets

    try:
        return list(datasets.load_dataset(hub, config, split=split, revision=revision))
    except Exception as err:  # offline, unknown id, missing config, a loading script: all one fix
        raise UserError(f"{where}: cannot load {hub}" + (f" ({config})" if config else "")
                        + (f" revision {revision}" if revision else "") + f" split {split} with `datasets` "
                        f"({type(err).__name__}); check network and id, or use a local file with "
                        f"--set {where}.file=PATH.jsonl") from None


def load_items(where: str, fields: dict[str, str], file: Path | None, hub: str | None, config: str | None,
               split: str, revision: str | None = None) -> list[DocItem]:
    """The items of one source, in file order. `fields` maps our names (document, reference, question, id) to
    the source's field names; a missing field is a one-line error naming it."""
    rows = read_rows(file, where) if file is not None else hub_rows(hub or "", config, split, where, revision)
    items = []
    for number, row in enumerate(rows):
        for ours in ("document", "reference", "question"):
            if ours in fields and fields[ours] not in row:
                raise UserError(f"{where}: row {number} has no field '{fields[ours]}' (mapped to {ours}); its "
                                f"fields: {', '.join(row)}; set {where}.fields.{ours}=FIELD")
        item_id = str(row[fields["id"]]) if "id" in fields and fields["id"] in row else str(number)
        question = flatten(row[fields["question"]]) if "question" in fields else None
        items.append(DocItem(item_id, flatten(row[fields["document"]]), flatten(row[fields["reference"]]),
                             question))
    if not items:
        raise UserError(f"{where}: the source holds no rows")
    return items
