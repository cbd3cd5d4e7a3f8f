"""What a report may present as a result: only the records of the weights and backend that run.json
names now, and never a task or checkpoint whose every sample was skipped (those get a warning)."""

from __future__ import annotations

import pandas as pd

SAMPLE = ["checkpoint", "task", "sample_id"]


def current_rows(frame: pd.DataFrame, run: dict) -> tuple[pd.DataFrame, list[str]]:
    """The rows whose (checkpoint, fingerprint, backend) match run.json's current `fingerprints` and
    `backend`, one per sample (the last written, should a sample have been recorded for two different
    requests); a warning for each group left out."""
    fingerprints = run.get("fingerprints", {})
    keep = (frame["fingerprint"] == frame["checkpoint"].map(fingerprints)) & (frame["backend"] == run.get("backend"))
    warnings = []
    for (checkpoint, fingerprint, backend), group in frame[~keep].groupby(["checkpoint", "fingerprint", "backend"]):
        warnings.append(f"report: left out {len(group)} records of {checkpoint} made with other weights or backend "
                        f"(fingerprint {fingerprint}, backend {backend}; run.json has "
                        f"{fingerprints.get(checkpoint, 'none')}, {run.get('backend')})")
    current = frame[keep]
    repeated = current.duplicated(SAMPLE, keep="last")
    if repeated.any():
        warnings.append(f"report: {int(repeated.sum())} samples were recorded twice with different requests (the "
                        f"task's code changed mid-run); the last record of each is used")
    return current[~repeated], warnings + normalisation_notes(run)


def normalisation_notes(run: dict) -> list[str]:
    """A run whose backend does not declare real-vocabulary loglikelihoods (vllm) says so in every report."""
    if "capabilities" not in run or "real-vocab-logprobs" in run["capabilities"]:
        return []
    return [f"report: backend {run.get('backend')} normalises loglikelihoods over the full vocabulary ([MASK] and "
            f"padding rows included), not the real one; choice accuracies are comparable, absolute logprobs are "
            f"not (docs/performance.md, 'Renormalisation')"]


def skipped_checkpoints(rows: pd.DataFrame) -> dict[str, dict]:
    """{checkpoint: {"samples": n, "reason": first skip reason}} for the checkpoints none of whose
    samples of this task ran."""
    found = {}
    for checkpoint, group in rows.groupby("checkpoint", sort=True):
        if (group["status"] == "ok").any():
            continue
        reasons = group["skip_reason"].dropna() if "skip_reason" in group else pd.Series(dtype=str)
        found[checkpoint] = {"samples": len(group), "reason": reasons.iloc[0] if len(reasons) else None}
    return found


def skip_warnings(task: str, skipped: dict[str, dict]) -> list[str]:
    return [f"{task}: all {info['samples']} samples of {checkpoint} were skipped"
            + (f" ({info['reason']})" if info["reason"] else "") + "; no result"
            for checkpoint, info in skipped.items()]


def results_only(summary: dict) -> dict:
    """The summary without what is not a result: tasks whose every sample was skipped, and the rows of
    checkpoints with no sample run (their metric columns would be empty)."""
    tasks = {}
    for task, result in summary["tasks"].items():
        if result.get("status") == "all_skipped":
            continue
        skipped = result.get("skipped_checkpoints", {})
        tasks[task] = {**result, "checkpoints": [c for c in result["checkpoints"] if c["checkpoint"] not in skipped]}
    return {**summary, "tasks": tasks}
