"""Tables as a paper author pastes them: CSV (full precision), Markdown and LaTeX (booktabs), with numbers
formatted, the best value of chosen columns in bold, and a caption that names n and the resampling unit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from meap_bench.rundir import safe_filename

COUNT_COLUMNS = ("n", "n_items", "n_samples", "n_discordant", "samples", "skipped", "meap_wins", "ntp_wins")
CELL_KEYS = ("length", "depth", "position", "n_docs", "n_pairs")  # grid coordinates: printed as given (50, 12.5)
LATEX_TEXT = {"−": "$-$", "–": "--", "±": r"$\pm$"}
P_COLUMNS = ("p", "p_value", "p_holm", "p_exact", "p_adjusted")


def format_value(column: str, value: object, dash: str = "–") -> str:
    """Counts as integers, p-values to 3 significant digits, other numbers to 3 decimals, NaN as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return dash
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) or (column in COUNT_COLUMNS and isinstance(value, float)
                                               and float(value).is_integer()):
        return f"{int(value)}"
    if isinstance(value, (float, np.floating)):
        if column.removeprefix("cell.") in CELL_KEYS:
            return f"{value:g}"
        if column.split(" ")[0] in P_COLUMNS or column.startswith("p_"):
            return f"{value:.3g}" if value >= 1e-4 else "<1e-4"
        return f"{value:.3f}"
    return str(value)


def formatted(frame: pd.DataFrame, dash: str = "–") -> pd.DataFrame:
    return pd.DataFrame({c: [format_value(str(c), v, dash) for v in frame[c]] for c in frame.columns},
                        index=frame.index)


def bolded(frame: pd.DataFrame, best: dict[str, set[int]], dash: str = "–") -> pd.DataFrame:
    text = formatted(frame, dash)
    for column, rows in best.items():
        for row in rows:
            text.iat[row, text.columns.get_loc(column)] = f"**{text.iat[row, text.columns.get_loc(column)]}**"
    return text


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape_latex(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def best_rows(frame: pd.DataFrame, columns: list[str]) -> dict[str, set[int]]:
    """Per column, the row positions holding its highest value."""
    best: dict[str, set[int]] = {}
    for column in columns:
        values = frame[column] if column in frame else None
        if values is not None and pd.api.types.is_numeric_dtype(values) and values.nunique() > 1:
            top = values.max()
            best[column] = {i for i, v in enumerate(frame[column]) if v == top}
    return best


def latex(frame: pd.DataFrame, caption: str, best: dict[str, set[int]], label: str) -> str:
    """booktabs LaTeX through pandas' Styler: escaped text, bold best values, caption and label."""
    text = bolded(frame, best, dash="--")
    styler = text.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    body = styler.to_latex(hrules=True, caption=escape_latex(caption) or None, label=label, position="t",
                           column_format="l" * min(1, len(text.columns)) + "r" * (len(text.columns) - 1))
    body = body.replace(r"\*\*", "**")
    for char, command in LATEX_TEXT.items():
        body = body.replace(char, command)
    parts = body.split("**")  # **value** -> \textbf{value}
    return "".join(f"\\textbf{{{p}}}" if i % 2 else p for i, p in enumerate(parts))


def markdown(frame: pd.DataFrame, caption: str, best: dict[str, set[int]]) -> str:
    text = bolded(frame, best)
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) else "left" for c in frame.columns]
    table = text.to_markdown(index=False, disable_numparse=True, colalign=align)
    return f"{table}\n\n{caption}\n" if caption else f"{table}\n"


PAIR_NUMBERS = ("meap_minus_ntp", "ci95_low", "ci95_high")


def paper_view(frame: pd.DataFrame) -> pd.DataFrame:
    """What Markdown and LaTeX show of a pair table: the delta with its interval in one column, the p-value
    and the counts beside it; bookkeeping columns (the test's name, the resampling unit: in the caption)
    left to the CSV."""
    if not set(PAIR_NUMBERS) <= set(frame.columns):
        return frame
    view = frame.drop(columns=[c for c in ("resampled", "test", "meap_wins", "ntp_wins") if c in frame])
    delta = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not math.isnan(d) else "–"
             for d, lo, hi in zip(*(frame[c] for c in PAIR_NUMBERS), strict=True)]
    at = list(view.columns).index("meap_minus_ntp")
    view = view.drop(columns=list(PAIR_NUMBERS))
    view.insert(at, "MEAP − NTP [95% CI]", delta)
    return view


def write_table(frame: pd.DataFrame, path: Path, caption: str = "", best: list[str] | None = None) -> None:
    """`path`.csv (every column, 4 decimals), `path`.md and `path`.tex (the paper view, numbers formatted);
    `best` columns get their highest value in bold."""
    path = path.with_name(safe_filename(path.name))  # names from records can never leave the tables folder
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.reset_index(drop=True).to_csv(path.with_name(f"{path.name}.csv"), index=False, float_format="%.4f")
    frame = paper_view(frame.reset_index(drop=True))
    marks = best_rows(frame, best or [])
    path.with_name(f"{path.name}.md").write_text(markdown(frame, caption, marks))
    path.with_name(f"{path.name}.tex").write_text(latex(frame, caption, marks, f"tab:{path.name}"))
