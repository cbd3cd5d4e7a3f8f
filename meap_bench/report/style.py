"""One figure style for every report figure: paper column or text width, readable fonts at that size,
TrueType (Type 42) fonts in PDFs, colour-blind-safe palettes, human metric labels (tasks name their cell axes)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

import matplotlib
from pydantic import ConfigDict

from meap_bench.config import Strict
from meap_bench.rundir import safe_filename

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WIDTHS = {"column": 3.3, "text": 6.8}  # inches: one column / full text width of a two-column paper
RC = {
    "font.family": "DejaVu Sans", "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7,
    "xtick.labelsize": 6.5, "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "figure.titlesize": 8,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in PDF/PS: many venues reject Type 3 fonts
    "axes.linewidth": 0.6, "lines.linewidth": 1.2, "lines.markersize": 3.5, "grid.linewidth": 0.4,
    "savefig.dpi": 300, "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
}
# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
SEQUENTIAL = "viridis"  # accuracy heatmaps: perceptually uniform, colour-blind safe, prints in grey
DIVERGING = "PuOr"  # MEAP - NTP: colour-blind-safe diverging map
OBJECTIVE_LINES = {"meap": {"ls": "-", "marker": "o"}, "ntp": {"ls": "--", "marker": "s"}}
BASELINE_LINES = {"closed_book": (0, (1, 1.5)), "oracle": (0, (4, 1.5, 1, 1.5))}
BASELINE_NAMES = {"closed_book": "closed-book", "oracle": "oracle"}
METRIC_LABELS = {
    "contains": "Accuracy (%)", "best_subspan_em": "Accuracy (%)", "rouge1": "ROUGE-1 recall (%)",
    "rank": "Rank accuracy (%)", "answer_greedy": "Greedy-answer rate (%)",
}


class FigureOptions(Strict):
    """What `report --set report.KEY=VALUE` may change without running inference again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    titles: bool = False  # baked-in titles (papers put titles in captions)
    width: Literal["column", "text"] = "column"  # paper column (3.3 in) or text width (6.8 in)
    bands: bool = True  # 95% bands on position curves


DEFAULT_OPTIONS = FigureOptions()


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, f"{metric} (%)")


def paper_style() -> AbstractContextManager:
    return plt.rc_context(RC)


def save(fig: plt.Figure, path: Path) -> list[Path]:
    """PNG and PDF, without timestamps, so regenerated figures are byte-stable. The name (task, checkpoint
    and pair names from the records) is made a plain file name, so it cannot leave `path.parent`."""
    path = path.with_name(safe_filename(path.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(RC):
        fig.savefig(png := path.with_name(f"{path.name}.png"), metadata={"Software": None})
        fig.savefig(pdf := path.with_name(f"{path.name}.pdf"),
                    metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return [png, pdf]
