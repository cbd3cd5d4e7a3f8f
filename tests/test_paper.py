"""Paper-ready reports on real runs: byte-identical regeneration, merged runs equal one run, LaTeX that is
well-formed (and compiles where a TeX engine exists), TrueType-only PDFs, column-width figures, an index.html
whose every link resolves (opened in headless Chromium where installed), and report-time options."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from meap_bench.cli import main

GRID = ["--set", "needle.context_lengths=96,160", "--set", "needle.depths=0,100", "--set", "needle.haystack=noise",
        "--set", "needle.samples_per_cell=3", "--set", "needle.max_new_tokens=4",
        "--set", "mdqa.n_docs=3", "--set", "mdqa.questions=3", "--set", "mdqa.max_new_tokens=4"]


def run(checkpoints_yaml: Path, out: Path, name: str, *extra: str) -> Path:
    assert main(["run", "--tasks", "needle,mdqa", "--checkpoints", str(checkpoints_yaml), "--out", str(out),
                 "--run-name", name, "--device", "cpu", *GRID, *extra]) == 0
    return out / name


@pytest.fixture(scope="module")
def runs(checkpoints_yaml, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("paper")
    return {"both": run(checkpoints_yaml, out, "both"), "ntp": run(checkpoints_yaml, out, "ntp", "--only", "tiny-ntp"),
            "meap": run(checkpoints_yaml, out, "meap", "--only", "tiny-meap")}


def outputs(run_dir: Path, *folders: str) -> dict[str, bytes]:
    return {f"{f}/{p.name}": p.read_bytes() for f in folders for p in sorted((run_dir / f).iterdir())}


def test_report_regenerates_every_table_and_figure_byte_identically(runs, capsys):
    run_dir = runs["both"]
    before = outputs(run_dir, "tables", "figures")
    index = (run_dir / "index.html").read_bytes()
    assert main(["report", str(run_dir)]) == 0
    assert outputs(run_dir, "tables", "figures") == before
    assert (run_dir / "index.html").read_bytes() == index
    capsys.readouterr()


def test_merging_two_runs_equals_running_them_together(runs, tmp_path, capsys):
    merged = tmp_path / "merged"
    assert main(["report", str(runs["ntp"]), str(runs["meap"]), "--out", str(merged)]) == 0
    assert outputs(merged, "tables", "figures") == outputs(runs["both"], "tables", "figures")
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["tasks"] == json.loads((runs["both"] / "summary.json").read_text())["tasks"]
    capsys.readouterr()


def test_incompatible_runs_are_refused_naming_the_keys(runs, checkpoints_yaml, tmp_path, capsys):
    other = run(checkpoints_yaml, tmp_path, "other", "--only", "tiny-meap", "--set", "needle.depths=0,50")
    capsys.readouterr()
    assert main(["report", str(runs["ntp"]), str(other), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "differ in tasks.needle.depths" in err and len(err.strip().splitlines()) == 1


def test_latex_tables_are_booktabs_and_compile(runs, tmp_path):
    tables = sorted((runs["both"] / "tables").glob("*.tex"))
    assert {t.stem for t in tables} >= {"needle_summary", "needle_pairs", "needle_pairs_cells", "mdqa_pairs_averaged"}
    for table in tables:
        text = table.read_text()
        for command in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\caption{"):
            assert command in text, (table.name, command)
        columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1))
        body = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
        assert all(line.count("&") == columns - 1 for line in body), table.name
        assert "nan" not in text and "0.0000" not in text  # formatted numbers, NaN as a dash
    pairs = (runs["both"] / "tables" / "needle_pairs.tex").read_text()
    assert "MEAP $-$ NTP [95\\% CI]" in pairs and "bootstrap over items" in pairs
    if shutil.which("pdflatex") is None:
        pytest.skip("no TeX engine installed: checked structurally only")
    document = tmp_path / "tables.tex"
    document.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
                        + "\n".join(t.read_text() for t in tables) + "\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]


def test_pdfs_embed_truetype_only_and_figures_fit_a_column(runs):
    pdfs = sorted((runs["both"] / "figures").glob("*.pdf"))
    assert {p.stem for p in pdfs} >= {"needle_heatmap_tiny-ntp", "needle_pair_tiny", "mdqa_curves", "mdqa_pair_tiny"}
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert b"/Type3" not in data, pdf.name
        assert b"/FontFile2" in data, pdf.name  # embedded TrueType (Type 42)
    for png in (runs["both"] / "figures").glob("*.png"):
        width = Image.open(png).size[0] / 300  # inches at the style's 300 dpi
        assert 1.0 < width < 3.6, (png.name, width)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


def test_index_html_is_self_contained_and_every_link_resolves(runs):
    run_dir = runs["both"]
    page = (run_dir / "index.html").read_text()
    parser = Links()
    parser.feed(page)
    files = [link for link in parser.links if not link.startswith("#")]
    assert any(link.endswith("needle_pair_tiny.png") for link in files)
    assert any(link.endswith("needle_pairs.tex") for link in files)
    for link in files:
        assert "://" not in link and not link.startswith("/"), link
        assert (run_dir / link).is_file(), link
    for fingerprint in json.loads((run_dir / "run.json").read_text())["fingerprints"].values():
        assert fingerprint in page
    assert "bootstrap over items" in page and "versions" in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium installed: links checked by parsing only")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (run_dir / "index.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert "meap-bench run" in dom.stdout and "needle_pairs" in dom.stdout


def test_report_options_change_figures_and_headline_without_inference(runs, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(runs["both"], copy)
    records = (copy / "records.jsonl").read_bytes()
    assert main(["report", str(copy), "--set", "report.width=text", "--set", "needle.headline_metric=rank"]) == 0
    assert (copy / "records.jsonl").read_bytes() == records
    width = Image.open(copy / "figures" / "needle_pair_tiny.png").size[0] / 300
    assert width > 5.0
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["tasks"]["needle"]["headline_metric"] == "rank"
    assert "MEAP - NTP rank" in capsys.readouterr().out
    assert main(["report", str(copy), "--set", "needle.depths=0"]) == 2
    assert "other settings need `run`" in capsys.readouterr().err
    assert main(["report", str(copy), "--set", "report.width=huge"]) == 2
    assert "report.width" in capsys.readouterr().err


def test_log_prompts_keeps_the_exact_prompt_text(checkpoints_yaml, tmp_path, capsys):
    import hashlib

    from meap_bench.records import read_records

    run_dir = run(checkpoints_yaml, tmp_path, "logged", "--only", "tiny-ntp", "--limit", "1", "--log-prompts")
    records = [r for r in read_records(run_dir / "records.jsonl") if r.status == "ok"]
    assert records and all(hashlib.sha256(r.meta["prompt"].encode()).hexdigest() == r.prompt_sha256
                           for r in records)
    capsys.readouterr()
