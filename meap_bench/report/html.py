"""`index.html`: one self-contained page per run (no network; figures linked relatively) with the run's
config, versions, checkpoint fingerprints, pair deltas, every table and figure, and the skipped cells."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from meap_bench.report.tables import formatted, paper_view

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 12px; }
th, td { border-bottom: 1px solid #e5e5e5; padding: .25em .6em; text-align: right; }
th { border-bottom: 1.5px solid #333; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: 12px; color: #555; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 12px; } .warn { color: #a40; }
nav a { margin-right: 1em; }
"""


def table_html(frame: pd.DataFrame) -> str:
    return formatted(paper_view(frame)).to_html(index=False, escape=True, border=0)


def caption_of(markdown: Path) -> str:
    """The caption `write_table` put under the Markdown table (its last paragraph), if any."""
    text = markdown.read_text().strip() if markdown.is_file() else ""
    last = text.rsplit("\n\n", 1)[-1]
    return "" if last.startswith("|") else last


def section(title: str, body: str, anchor: str) -> str:
    return f'<h2 id="{anchor}">{html.escape(title)}</h2>\n{body}\n'


def write_index(run_dir: Path, summary: dict, skipped: pd.DataFrame) -> Path:
    """Write `run_dir/index.html` from what the report wrote (tables/*.csv, figures/*.png, summary.json),
    run.json and the skipped records (checkpoint, task, cell, skip_reason)."""
    run = json.loads((run_dir / "run.json").read_text())
    parts = [f"<h1>meap-bench run <code>{html.escape(run_dir.name)}</code></h1>"]
    tasks = list(summary.get("tasks", {}))
    parts.append("<nav>" + "".join(f'<a href="#{t}">{html.escape(t)}</a>' for t in tasks)
                 + '<a href="#skipped">skipped cells</a><a href="#config">config</a></nav>')
    checkpoints = pd.DataFrame([{"checkpoint": c["name"], "objective": c.get("objective"), "pair": c.get("pair"),
                                 "path": c["path"], "fingerprint": run.get("fingerprints", {}).get(c["name"], "")}
                                for c in run["checkpoints"]])
    parts.append(section("Checkpoints", table_html(checkpoints), "checkpoints"))
    for task in tasks:
        result = summary["tasks"][task]
        body = []
        if result.get("status") == "all_skipped":
            body.append('<p class="warn">Every sample of this task was skipped: no result.</p>')
        for figure in sorted((run_dir / "figures").glob(f"{task}_*.png")):
            body.append(f'<figure><a href="figures/{figure.stem}.pdf"><img src="figures/{figure.name}" '
                        f'alt="{html.escape(figure.stem)}" width="420"></a>'
                        f"<figcaption>{html.escape(figure.stem)} (click for the PDF)</figcaption></figure>")
        tables = sorted((run_dir / "tables").glob(f"{task}_*.csv"), key=lambda t: ("pairs" not in t.stem, t.stem))
        for table in tables:
            body.append(f"<h3>{html.escape(table.stem)}</h3><p>{html.escape(caption_of(table.with_suffix('.md')))}"
                        f"</p>{table_html(pd.read_csv(table))}"
                        f'<p><a href="tables/{table.stem}.md">Markdown</a> · <a href="tables/{table.name}">CSV</a>'
                        f' · <a href="tables/{table.stem}.tex">LaTeX</a></p>')
        parts.append(section(f"{task} (headline: {result.get('headline_metric', '?')})", "\n".join(body), task))
    if skipped.empty:
        parts.append(section("Skipped cells", "<p>None: every cell fit every checkpoint.</p>", "skipped"))
    else:
        parts.append(section("Skipped cells", table_html(skipped), "skipped"))
    keys = ("tasks", "seed", "limit", "backend", "capabilities", "device", "git_commit", "versions")
    config = {k: run.get(k) for k in keys}
    parts.append(section("Config and versions", f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>", "config"))
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>meap-bench: '
            f"{html.escape(run_dir.name)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
    path = run_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
