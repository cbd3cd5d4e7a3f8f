"""The CI regression gate on run directories made here: pass, significant regression, a drop within noise,
improvement, missing metric, mismatched config, missing baseline, candidate vs reference."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from meap_bench.cli import main
from meap_bench.report.stats import Clusters, sign_flip_p

GRID = ["--set", "needle.context_lengths=96,160", "--set", "needle.depths=0,100", "--set", "needle.haystack=noise",
        "--set", "needle.samples_per_cell=6", "--set", "needle.max_new_tokens=4"]


@pytest.fixture(scope="module")
def run_dir(checkpoints_yaml, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gate")
    assert main(["run", "--tasks", "needle", "--checkpoints", str(checkpoints_yaml), "--out", str(out),
                 "--run-name", "r", "--device", "cpu", *GRID]) == 0
    return out / "r"


@pytest.fixture()
def baseline(run_dir, tmp_path, capsys) -> Path:
    path = tmp_path / "baseline.json"
    assert main(["baseline", "save", str(run_dir), "--out", str(path)]) == 0
    capsys.readouterr()
    return path


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def shift_items(data: dict, amount: float, only_first: bool = False) -> None:
    for entry in data["entries"]:
        for k, item in enumerate(sorted(entry["items"])):
            if not only_first or k == 0:
                entry["items"][item] += amount


def gate(run_dir: Path, *extra: str) -> int:
    return main(["check", str(run_dir), *extra])


def test_same_run_passes_and_writes_junit(run_dir, baseline, capsys):
    assert gate(run_dir, "--baseline", str(baseline)) == 0
    out = capsys.readouterr().out
    assert "no regression" in out and "| tiny-ntp | tiny-ntp | needle | contains | all |" in out
    suite = ElementTree.parse(run_dir / "gate-junit.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests")) == 2


def test_significant_regression_exits_1_and_names_the_metric(run_dir, baseline, tmp_path, capsys):
    edit(baseline, lambda d: shift_items(d, 0.2))  # the baseline 20 points higher on every item
    junit = tmp_path / "gate.xml"
    assert gate(run_dir, "--baseline", str(baseline), "--junit", str(junit)) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "tiny-ntp needle contains [all] -0.200" in out.splitlines()[-1]
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("failures") == "2"


def test_drop_within_noise_passes(run_dir, baseline, capsys):
    edit(baseline, lambda d: shift_items(d, 0.5, only_first=True))  # one item of six: mean drop 0.083
    assert gate(run_dir, "--baseline", str(baseline)) == 0
    out = capsys.readouterr().out
    assert "+0.083" in out and "no regression" in out


def test_improvement_passes(run_dir, baseline, capsys):
    edit(baseline, lambda d: shift_items(d, -0.3))
    assert gate(run_dir, "--baseline", str(baseline)) == 0
    assert "-0.300" in capsys.readouterr().out


def test_tolerance_rules_gate_cells_and_checkpoints(run_dir, baseline, tmp_path, capsys):
    edit(baseline, lambda d: shift_items(d, 0.2))
    rules = tmp_path / "rules.yaml"
    rules.write_text("checkpoints: [tiny-meap]\nrules:\n  - {cell: '*', tolerance: 0.5}\n")
    assert gate(run_dir, "--baseline", str(baseline), "--rules", str(rules)) == 0  # 0.2 is within 0.5
    out = capsys.readouterr().out
    assert "tiny-ntp" not in out and "length=96" in out


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: [e.update(metric="rouge9") for e in d["entries"]], "no 'contains' entries for task 'needle'"),
    (lambda d: d["tasks"]["needle"].update(depths=[0, 50]), "needle config differs from the baseline in needle.depths"),
    (lambda d: d.update(format=99), "not a meap-bench baseline"),
])
def test_unusable_baseline_exits_2(run_dir, baseline, capsys, change, message):
    edit(baseline, change)
    assert gate(run_dir, "--baseline", str(baseline)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_baseline_and_metric_exit_2(run_dir, tmp_path, capsys):
    assert gate(run_dir, "--baseline", str(tmp_path / "none.json")) == 2
    assert "file not found" in capsys.readouterr().err
    assert gate(run_dir, "--candidate", "tiny-meap", "--reference", "nope") == 2
    assert "checkpoint 'nope' is not in the reference" in capsys.readouterr().err


def test_candidate_against_reference_of_one_run(run_dir, capsys):
    assert gate(run_dir, "--candidate", "tiny-meap", "--reference", "tiny-meap") == 0  # itself: no drop
    assert "| tiny-meap | tiny-meap | needle | contains | all |" in capsys.readouterr().out
    code = gate(run_dir, "--candidate", "tiny-meap", "--reference", "tiny-ntp")
    assert code in (0, 1)
    assert "| tiny-meap | tiny-ntp |" in capsys.readouterr().out


def one_sided(diffs: np.ndarray) -> float:
    return sign_flip_p(diffs, Clusters.of(np.arange(len(diffs))), alternative="greater")


def test_one_sided_sign_flip_p_values():
    assert one_sided(np.ones(5)) == pytest.approx(1 / 32)
    assert one_sided(-np.ones(5)) == 1.0
    assert one_sided(np.array([1.0, -1.0])) == pytest.approx(0.75)
    assert one_sided(np.zeros(4)) == 1.0
    assert one_sided(np.ones(30)) < 1e-3
