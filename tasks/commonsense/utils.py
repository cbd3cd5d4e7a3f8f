"""Loads the project's small local JSONL data sets for lm-eval (no hub, independent of the working
directory: files are found next to this module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

HERE = Path(__file__).resolve().parent


def load_jsonl(data_file: str, split: str = "test", **_: Any) -> datasets.DatasetDict:
    """`data_file` (relative to this folder) as a DatasetDict with one split; extra keys lm-eval passes
    (task metadata) are ignored."""
    path = HERE / data_file
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})
