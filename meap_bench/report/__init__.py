"""Reports are rebuilt from a run directory's records (and run.json) alone, so any run can be re-reported."""

from meap_bench.report.build import build_report

__all__ = ["build_report"]
