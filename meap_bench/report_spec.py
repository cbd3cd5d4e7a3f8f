"""What a task declares of its report: the figure kinds and tables it gets beyond the ones every task gets (the
cells, per-checkpoint summary and MEAP-minus-NTP pair tables), each naming the cell keys and scores it draws.

Each task class declares its spec (`Task.report_spec`, next to its config and scorer); the runner writes every
task's spec into run.json when a run starts, and report/ reads it from there and dispatches on its fields alone,
so report/ names no task and a new task gets its figures and tables without report code. Plain data (JSON in
run.json), so that any run can be re-reported from its records and run.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

FORBID = ConfigDict(extra="forbid")  # an edited run.json with an unknown key is refused, not half-read


@dataclass(frozen=True)
class Heatmap:
    """The headline metric over two cell keys: a map per checkpoint with its mean-vs-`columns` line beside it, and
    NTP | MEAP | MEAP - NTP per pair, the delta cells whose paired 95% interval excludes 0 starred."""

    __pydantic_config__ = FORBID

    rows: str
    columns: str
    chance: dict[str, float] = field(default_factory=dict)  # metric -> its chance level, drawn on the line panel


@dataclass(frozen=True)
class PositionSweep:
    """Cells with a gold `position` among `size` items (and optionally a `setting`: `documents`, or the baselines
    `closed_book` and `oracle`): score-vs-position curves with 95% bands, one panel per size; position x size
    heatmaps; tables per cell and averaged over positions."""

    __pydantic_config__ = FORBID

    size: str  # the cell key of the number of items
    size_label: str  # what the items are, after a count: "documents" in "10 documents"
    position_label: str  # the position axis


@dataclass(frozen=True)
class Strata:
    """Scores of sub-tasks named by a cell key (lm-eval tasks): the headline is the unweighted mean over strata,
    where a stratum without the headline metric counts with `fallback`; a table of every metric ± standard error
    per stratum with MEAP minus NTP per pair."""

    __pydantic_config__ = FORBID

    key: str
    metrics: tuple[str, ...]
    fallback: str
    source: str  # who computed the per-stratum scores, named in the table's caption


@dataclass(frozen=True)
class AttentionMaps:
    """Attention summaries (scores `target_mass`, ...; per-layer x head arrays in meta `layer_head`): per value of
    the cell key `split`, a table per cell and a heatmap of the target share over that value's two cell keys;
    layer x head maps per checkpoint and pair; the attention quantities per pair with a forest plot."""

    __pydantic_config__ = FORBID

    split: str
    axes: dict[str, tuple[str, str]]  # value of `split` -> (row, column) cell keys of its heatmap, in drawing order


@dataclass(frozen=True)
class Bars:
    """A 0/1 `metric` decided by a judge, per value of the cell key `group`: the share per checkpoint with a Wilson
    95% interval, the unweighted average over groups, unjudged counts and judge cost; MEAP minus NTP per pair and
    group; a bar chart with the intervals. `judge` names the judge in every table and figure."""

    __pydantic_config__ = FORBID

    group: str
    metric: str
    judge: str


@dataclass(frozen=True)
class ReportSpec:
    """A task's report beyond the common tables: each field, when set, adds one figure kind with its tables."""

    __pydantic_config__ = FORBID

    axis_labels: dict[str, str] = field(default_factory=dict)  # cell key -> its axis label in figures
    heatmap: Heatmap | None = None
    positions: PositionSweep | None = None
    strata: Strata | None = None
    attention: AttentionMaps | None = None
    bars: Bars | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ReportSpec:
        """The spec run.json recorded; ValueError naming the first bad field."""
        try:
            return ADAPTER.validate_python(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None


ADAPTER = TypeAdapter(ReportSpec)
