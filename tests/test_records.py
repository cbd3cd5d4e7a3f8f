"""records.jsonl on disk: schema version and field validation on read, torn-line recovery, atomic replace."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from meap_bench.errors import UserError
from meap_bench.records import SCHEMA_VERSION, Record, RecordWriter, read_records, replace_records


def record(i: int, **changes) -> Record:
    fields = dict(run="r", checkpoint="c", fingerprint="f" * 16, backend="hf", objective="ntp", pair=None,
                  task="needle", cell={"length": 128, "depth": 50.0}, sample_id=f"s{i}", item_id=f"needle-{i}",
                  status="ok", request_sha256="a" * 64, output="1234567 é", scores={"contains": 1.0})
    return Record(**{**fields, **changes})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_raw(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_written_records_read_back_equal(tmp_path):
    path = tmp_path / "records.jsonl"
    writer = RecordWriter(path)
    writer.write([record(0), record(1, status="skipped", skip_reason="too long", output=None, scores={})])
    writer.close()
    assert read_records(path) == [record(0), record(1, status="skipped", skip_reason="too long", output=None,
                                                    scores={})]
    assert all(row["schema"] == SCHEMA_VERSION for row in lines(path))
    assert "é" in path.read_text(encoding="utf-8")  # UTF-8 as is, not \u escapes


@pytest.mark.parametrize("version", [1, 3, None])
def test_record_of_another_schema_version_is_a_user_error(tmp_path, version):
    path = tmp_path / "records.jsonl"
    row = asdict(record(0))
    if version is None:
        del row["schema"]  # records written before the schema existed
    else:
        row["schema"] = version
    write_raw(path, [asdict(record(1)), row])
    with pytest.raises(UserError) as err:
        read_records(path)
    message = str(err.value)
    assert f"record 2: record schema {version!r}" in message and f"reads schema {SCHEMA_VERSION}" in message
    assert "--run-name" in message and "\n" not in message


@pytest.mark.parametrize(("field", "value"), [("status", "done"), ("scores", {"contains": "yes"}),
                                             ("item_id", None)])
def test_malformed_field_is_a_user_error_naming_it(tmp_path, field, value):
    path = tmp_path / "records.jsonl"
    write_raw(path, [{**asdict(record(0)), field: value}])
    with pytest.raises(UserError, match=rf"record 1: invalid record field '{field}"):
        read_records(path)


def test_unknown_field_and_broken_json_are_user_errors(tmp_path):
    path = tmp_path / "records.jsonl"
    write_raw(path, [{**asdict(record(0)), "colour": "red"}])
    with pytest.raises(UserError, match="invalid record field 'colour'"):
        read_records(path)
    path.write_text(json.dumps(asdict(record(0))) + "\n{not json\n" + json.dumps(asdict(record(1))) + "\n")
    with pytest.raises(UserError, match="line 2: not valid JSON"):
        read_records(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(UserError, match="expected a JSON object"):
        read_records(path)


def test_torn_last_line_is_ignored_then_cut_and_appending_goes_on(tmp_path):
    path = tmp_path / "records.jsonl"
    whole = "".join(json.dumps(asdict(record(i)), ensure_ascii=False) + "\n" for i in range(2))
    torn = json.dumps(asdict(record(2)))[:57]  # a kill in the middle of a write
    path.write_text(whole + torn, encoding="utf-8")
    assert read_records(path) == [record(0), record(1)]
    assert path.read_text(encoding="utf-8") == whole + torn  # reading never changes the file

    writer = RecordWriter(path)  # opening for append cuts the torn line in place
    assert path.read_text(encoding="utf-8") == whole
    writer.write([record(3)])
    writer.close()
    assert read_records(path) == [record(0), record(1), record(3)]


def test_torn_only_line_leaves_an_empty_file(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"run": "r", "checkp', encoding="utf-8")
    assert read_records(path) == []
    RecordWriter(path).close()
    assert path.read_bytes() == b""


def test_blank_trailing_lines_are_fine(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(asdict(record(0))) + "\n\n" + json.dumps(asdict(record(1))) + "\n\n",
                    encoding="utf-8")
    assert read_records(path) == [record(0), record(1)]
    writer = RecordWriter(path)
    writer.write([record(2)])
    writer.close()
    assert read_records(path) == [record(0), record(1), record(2)]


def test_replace_records_swaps_the_whole_file(tmp_path):
    path = tmp_path / "records.jsonl"
    write_raw(path, [asdict(record(i)) for i in range(3)])
    replace_records(path, [record(1)])
    assert read_records(path) == [record(1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.jsonl"]  # no temporary file left
    replace_records(tmp_path / "stale" / "x.jsonl", [record(0)])
    assert read_records(tmp_path / "stale" / "x.jsonl") == [record(0)]
