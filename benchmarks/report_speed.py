"""How long `report` takes on a large run: writes a synthetic run directory of N needle records (two
checkpoints of a pair, a length x depth grid, binary and continuous scores), then times `build_report` on it.

    python benchmarks/report_speed.py --records 100000 [--json benchmarks/report_speed.json]

Prints a table and saves the figures as JSON. The records are made here (no model runs): the point is the
report's own cost (pandas aggregation, item-clustered statistics, figures, tables, index.html)."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from meap_bench.records import Record, RecordWriter
from meap_bench.report.build import build_report

LENGTHS = [1024, 2048, 4096, 8192, 16384]
DEPTHS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def write_run(run_dir: Path, n_records: int, seed: int = 0) -> None:
    cells = [(length, depth) for length in LENGTHS for depth in DEPTHS]
    items = max(1, n_records // (2 * len(cells)))
    config = {"context_lengths": LENGTHS, "depths": DEPTHS, "samples_per_cell": items, "headline_metric": "contains",
              "distractors": 4}
    checkpoints = [{"name": "big-ntp", "path": "big-ntp", "objective": "ntp", "pair": "big"},
                   {"name": "big-meap", "path": "big-meap", "objective": "meap", "pair": "big"}]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({
        "run": run_dir.name, "tasks": {"needle": config}, "checkpoints": checkpoints, "seed": seed, "limit": None,
        "backend": "hf", "device": "cpu", "fingerprints": {"big-ntp": "f0", "big-meap": "f1"}}))
    rng = np.random.default_rng(seed)
    skill = rng.normal(size=items)  # item difficulty shared by every cell and both checkpoints
    writer = RecordWriter(run_dir / "records.jsonl")
    for checkpoint, fingerprint, boost in (("big-ntp", "f0", 0.0), ("big-meap", "f1", 0.3)):
        batch = []
        for length, depth in cells:
            logit = skill + boost - length / 8192
            correct = rng.random(items) < 1 / (1 + np.exp(-logit))
            for i in range(items):
                batch.append(Record(
                    run=run_dir.name, checkpoint=checkpoint, fingerprint=fingerprint, backend="hf",
                    objective=checkpoint.split("-")[1], pair="big", task="needle",
                    cell={"length": length, "depth": float(depth)}, sample_id=f"L{length}-D{depth}-S{i}",
                    item_id=f"needle-{i}", status="ok", request_sha256=f"{checkpoint}{length}{depth}{i}",
                    output="1234567" if correct[i] else "", target="1234567",
                    scores={"contains": float(correct[i]), "answer_logprob": float(logit[i] - 3)}))
        writer.write(batch)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/report_speed.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "big"
        began = time.perf_counter()
        write_run(run_dir, args.records)
        written = time.perf_counter() - began
        began, cpu = time.perf_counter(), time.process_time()
        build_report(run_dir)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        n = sum(1 for _ in open(run_dir / "records.jsonl"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"records": n, "cells": len(LENGTHS) * len(DEPTHS), "report_seconds": round(seconds, 2),
              "report_cpu_seconds": round(cpu, 2),
              "write_seconds": round(written, 2), "peak_rss_mb": round(peak)}
    print("| records | cells | report wall (s) | report CPU (s) | peak RSS (MB) |\n|---:|---:|---:|---:|---:|")
    print(f"| {n} | {result['cells']} | {result['report_seconds']} | {result['report_cpu_seconds']} "
          f"| {result['peak_rss_mb']} |")
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
