"""`python -m meap_bench <command>`: argument parsing, exit codes and one-line user errors."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from meap_bench.errors import EnvironmentFault, UserError

DEFAULT_CHECKPOINTS = Path("checkpoints.yaml")
RUN_DEFAULTS = {"checkpoints": DEFAULT_CHECKPOINTS, "backend": "hf", "out": Path("reports"), "seed": 0}
RESUME_IGNORES = {"tasks": "--tasks", "checkpoints": "--checkpoints", "only": "--only", "backend": "--backend",
                  "out": "--out", "run_name": "--run-name", "overrides": "--set", "limit": "--limit",
                  "seed": "--seed"}
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass
class Progress:
    """Where a command stands, for the one line printed when it is interrupted or the disk fills up."""

    run_dir: Path | None = None
    phase: str = "setup"  # setup | run | report
    interrupted: bool = False


PROGRESS = Progress()


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (not the whole usage) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


EXAMPLES = """examples:
  meap-bench run --tasks needle,mdqa                      the main job on the default pair (CPU, offline)
  meap-bench run --tasks needle --set needle.context_lengths=256,512 --set needle.depths=0,50,100
  meap-bench run --resume reports/needle-mdqa-1a2b3c4d     continue an interrupted run
  meap-bench report reports/needle-mdqa-1a2b3c4d           rebuild tables and figures from records
  meap-bench baseline save reports/nightly --out baseline.json
  meap-bench check reports/new --baseline baseline.json   exit 1 on a significant regression
  meap-bench train --recipe tiny-pair --out my-pair        train an NTP/MEAP twin pair
(`python -m meap_bench` works the same; `meap-bench COMMAND --help` for each command)"""


def build_parser() -> argparse.ArgumentParser:
    from meap_bench import __version__

    parser = Parser(prog="meap-bench", description="Does a MEAP checkpoint beat its NTP twin, and where?",
                    epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"meap-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run tasks on every selected checkpoint, then write the report")
    run.add_argument("--tasks", help="comma-separated task names, e.g. needle,mdqa")
    run.add_argument("--checkpoints", type=Path, help="checkpoints YAML (default: checkpoints.yaml)")
    run.add_argument("--only", help="comma-separated checkpoint names to run (default: all)")
    run.add_argument("--backend", help="inference backend (default: hf)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                     help="where the backend runs (default auto: cuda when visible, else cpu)")
    run.add_argument("--out", type=Path, help="parent of run directories (default: reports)")
    run.add_argument("--run-name", help="run directory name (default: tasks + config hash)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="TASK.KEY=VALUE",
                     help="override a task setting, e.g. needle.context_lengths=256,512 (repeatable)")
    run.add_argument("--limit", type=positive_int, help="at most N samples per cell, for a quick look")
    run.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="continue a run as it was started (only --device and --fresh may be given with it)")
    run.add_argument("--log-prompts", action="store_true",
                     help="keep each prompt's text in its record (meta.prompt), as lm-eval's --log_samples")
    run.add_argument("--fresh", metavar="NAME[,NAME]", default="",
                     help="checkpoints whose weights changed since the run directory recorded them: move their old "
                          "records to stale/ and evaluate them again")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser(
        "report", help="rebuild tables, figures and index.html from a run's records (no inference)",
        description="e.g. meap-bench report reports/RUN --set report.width=text --set needle.headline_metric=rank; "
                    "meap-bench report reports/A reports/B --out reports/A+B merges runs of one config")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="run directory written by `run`; several are merged into one report (see --out)")
    report.add_argument("--out", type=Path, help="merged run directory to write (default reports/merged-<hash>)")
    report.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="report.titles=true|false, report.width=column|text, report.bands=true|false, "
                             "TASK.headline_metric=SCORE (repeatable)")
    report.set_defaults(func=cmd_report)

    ls = sub.add_parser("ls", help="list tasks and the checkpoints of a checkpoints YAML")
    ls.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS, help="checkpoints YAML")
    ls.set_defaults(func=cmd_ls)

    check = sub.add_parser("validate", help="check configs, checkpoint paths and tokenizers (no model runs)")
    check.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS, help="checkpoints YAML")
    check.add_argument("--tasks", help="task configs to check (default: all)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="TASK.KEY=VALUE",
                       help="override a task setting as in `run` (repeatable)")
    check.set_defaults(func=cmd_validate)

    add_gate_commands(sub)
    try:
        from meap_bench.train.command import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def add_gate_commands(sub: argparse._SubParsersAction) -> None:
    """`baseline save` and `check`: the CI regression gate (meap_bench/gate.py, docs/ci.md)."""
    baseline = sub.add_parser("baseline", help="save a run's headline metrics as a regression baseline")
    actions = baseline.add_subparsers(dest="action", required=True, parser_class=Parser)
    save = actions.add_parser("save", help="write baseline.json from a run directory",
                              description="e.g. meap-bench baseline save reports/nightly --out baseline.json")
    save.add_argument("run_dir", type=Path, help="run directory written by `run`")
    save.add_argument("--out", type=Path, default=Path("baseline.json"), help="baseline file (default baseline.json)")
    save.set_defaults(func=cmd_baseline_save)

    check = sub.add_parser(
        "check", help="fail (exit 1) when a run regresses against a baseline or a reference checkpoint",
        description="Exit 0: no regression; 1: a significant drop beyond tolerance; 2: unusable input. e.g. "
                    "meap-bench check reports/new --baseline baseline.json --rules gate.yaml, or "
                    "meap-bench check reports/new --candidate meap-v2 --reference meap-v1")
    check.add_argument("run_dir", type=Path, help="run directory to check")
    check.add_argument("--baseline", type=Path, help="file written by `baseline save`")
    check.add_argument("--rules", type=Path, help="YAML: alpha, checkpoints to gate, tolerances per task/metric/cell")
    check.add_argument("--candidate", help="checkpoint of RUN_DIR to gate")
    check.add_argument("--reference", help="checkpoint to compare with (of the baseline, or of RUN_DIR without one)")
    check.add_argument("--junit", type=Path, help="write JUnit XML here (default RUN_DIR/gate-junit.xml)")
    check.set_defaults(func=cmd_check)


def cmd_baseline_save(args: argparse.Namespace) -> int:
    from meap_bench.gate import save_baseline

    baseline = save_baseline(args.run_dir, args.out)
    print(f"baseline: {len(baseline['entries'])} entries from {args.run_dir} -> {args.out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from meap_bench.gate import check, load_rules, report

    rules = load_rules(args.rules)
    results = check(args.run_dir, args.baseline, rules, args.candidate, args.reference)
    if not results:
        raise UserError(f"check: nothing to compare in {args.run_dir}; the rules gate no entry of the run")
    return report(results, rules, args.junit or args.run_dir / "gate-junit.xml")


def select_checkpoints(path: Path, only: str | None):
    from meap_bench.config import load_checkpoints

    checkpoints = load_checkpoints(path)
    if not only:
        return checkpoints
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    known = {c.name for c in checkpoints}
    for name in wanted:
        if name not in known:
            raise UserError(f"--only: no checkpoint '{name}' in {path}; known: {', '.join(sorted(known))}")
    return [c for c in checkpoints if c.name in wanted]


def task_configs(names: list[str], overrides: list[str]):
    from meap_bench.config import parse_override
    from meap_bench.tasks import load_task_config

    parsed = [parse_override(o) for o in overrides]
    for task, key, _ in parsed:
        if task not in names:
            raise UserError(f"--set {task}.{key}: task '{task}' is not among the tasks run ({', '.join(names)})")
    return {name: load_task_config(name, parsed) for name in names}


def report_settings(overrides: list[str]):
    """`report --set`: figure options (report.KEY) and headline metrics (TASK.headline_metric), nothing that
    would need inference again."""
    from meap_bench.config import parse_override, validate
    from meap_bench.report.style import FigureOptions

    options, headline = {}, {}
    for text in overrides:
        task, key, value = parse_override(text)
        if task == "report":
            options[key] = value
        elif key == "headline_metric" and isinstance(value, str):
            headline[task] = value
        else:
            raise UserError(f"--set {task}.{key}: `report` changes only report.titles, report.width, report.bands "
                            f"and TASK.headline_metric; other settings need `run`")
    return validate(FigureOptions, options, "--set", "report"), headline


def print_report(run_dir: Path, overrides: list[str] | None = None) -> None:
    """Rebuild the report under the run directory's lock; its tables on stdout (results only), each warning
    on stderr in one line."""
    from meap_bench.report.build import build_report, summary_table
    from meap_bench.report.spec import report_specs
    from meap_bench.report.validity import results_only
    from meap_bench.rundir import RunLock, read_run_json

    options, headline = report_settings(overrides or [])
    with RunLock(run_dir):
        PROGRESS.run_dir, PROGRESS.phase = run_dir, "report"
        summary = build_report(run_dir, options, headline)
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(summary_table(results_only(summary), report_specs(read_run_json(run_dir), run_dir)))
    for task, result in summary["tasks"].items():
        if result["status"] == "all_skipped":
            print(f"{task}: no result: every sample of every checkpoint was skipped (see summary.json)")


def refuse_ignored_with_resume(args: argparse.Namespace) -> None:
    """`--resume` takes everything from run.json: an option it would ignore is refused, not dropped."""
    given = [flag for key, flag in RESUME_IGNORES.items() if getattr(args, key) not in (None, [])]
    if given:
        raise UserError(f"run --resume {args.resume}: {', '.join(given)} cannot be changed on resume (the run "
                        f"continues with its run.json); leave {'them' if len(given) > 1 else 'it'} out, or start "
                        f"a new run without --resume")


def cmd_run(args: argparse.Namespace) -> int:
    from meap_bench.rundir import RunLock, prepare_run_dir
    from meap_bench.runner import RunPlan, execute, plan_from_run_json
    from meap_bench.tasks import parse_task_names

    fresh = frozenset(n.strip() for n in args.fresh.split(",") if n.strip())
    if args.resume:
        refuse_ignored_with_resume(args)
        plan = plan_from_run_json(args.resume, args.device if args.device != "auto" else None, fresh)
    else:
        for key, value in RUN_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if not args.tasks:
            raise UserError("run: give --tasks (e.g. --tasks needle) or --resume RUN_DIR")
        names = parse_task_names(args.tasks)
        configs = task_configs(names, args.overrides)
        checkpoints = select_checkpoints(args.checkpoints, args.only)
        plan = RunPlan(Path(), checkpoints, configs, args.seed, args.limit, args.backend, args.device, fresh)
        plan.run_dir = prepare_run_dir(args.out, plan.default_name() if args.run_name is None else args.run_name)
    plan.log_prompts = args.log_prompts
    with RunLock(plan.run_dir):
        PROGRESS.run_dir, PROGRESS.phase = plan.run_dir, "run"
        execute(plan)
    print_report(plan.run_dir)
    print(f"\nrun directory: {plan.run_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = args.run_dirs[0]
    if len(args.run_dirs) > 1:
        from meap_bench.report.merge import merge_runs, merged_name
        from meap_bench.rundir import prepare_run_dir

        out = args.out or prepare_run_dir(args.run_dirs[0].parent, merged_name(args.run_dirs))
        run_dir = merge_runs(args.run_dirs, out)
        print(f"merged {len(args.run_dirs)} runs into {run_dir}")
    elif args.out:
        raise UserError("report --out: give it with two or more run directories to merge")
    from meap_bench.rundir import read_run_json

    read_run_json(run_dir)  # a run directory, before anything is written into it
    print_report(run_dir, args.overrides)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from meap_bench.tasks import TASKS, tasks_dir

    print("tasks:")
    for name in sorted(TASKS):
        path = tasks_dir() / f"{name}.yaml"
        print(f"  {name:<12} {path if path.is_file() else '(defaults; no config file)'}")
    print(f"checkpoints ({args.checkpoints}):")
    for ckpt in select_checkpoints(args.checkpoints, None):
        print(f"  {ckpt.name:<16} {ckpt.objective or '?':<5} pair={ckpt.pair or '-':<10} {ckpt.path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from meap_bench.backends.common import check_weight_files, load_checkpoint_tokenizer
    from meap_bench.tasks import TASKS, parse_task_names

    names = parse_task_names(args.tasks) if args.tasks else sorted(TASKS)
    task_configs(names, args.overrides)
    checkpoints = select_checkpoints(args.checkpoints, None)
    for ckpt in checkpoints:
        tokenizer = load_checkpoint_tokenizer(ckpt)
        if Path(ckpt.path).is_dir():
            check_weight_files(Path(ckpt.path), ckpt.name)
        print(f"ok  {ckpt.name}: {ckpt.objective}, tokenizer of {len(tokenizer)} tokens, {ckpt.path}")
    print(f"ok  task configs: {', '.join(names)}")
    return 0


def kept() -> str:
    """What an interrupted or failed run left on disk, for its one-line message."""
    from meap_bench.rundir import RECORDS, count_records

    if PROGRESS.run_dir is None or PROGRESS.phase == "setup":
        return "nothing was written"
    count = count_records(PROGRESS.run_dir)
    return f"{count} finished records are kept in {PROGRESS.run_dir / RECORDS}"


def interrupted() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this line short
    if PROGRESS.phase == "report":
        print(f"interrupted during the report: {kept()}; `python -m meap_bench report {PROGRESS.run_dir}` "
              f"rebuilds the tables and figures", file=sys.stderr)
    elif PROGRESS.phase == "run":
        print(f"interrupted: {kept()}; run the same command again (or run --resume {PROGRESS.run_dir}) to go on",
              file=sys.stderr)
    else:
        print("interrupted: nothing was written", file=sys.stderr)
    return 130


def environment_fault(err: OSError) -> int:
    """An OS error (full disk, read-only folder, permissions) as one line and exit code 1."""
    where = f"{err.filename}: " if err.filename else ""
    reason = (err.strerror or str(err)).strip().splitlines()[0] if (err.strerror or str(err)).strip() else "error"
    if err.errno in FULL_DISK:
        print(f"error: {where}{reason}: the disk is full; {kept()}; free space, then run the same command again",
              file=sys.stderr)
    elif err.errno in NO_WRITE:
        print(f"error: {where}{reason}: cannot write there; make it writable or choose another --out",
              file=sys.stderr)
    else:
        print(f"error: {where}{reason}; {kept()}", file=sys.stderr)
    return 1


def on_sigint(signum: int, frame: object) -> None:
    """Ctrl-C: remembered, so that a KeyboardInterrupt swallowed by a library (a `__del__`, a callback)
    still ends the command with 130, then raised as usual."""
    PROGRESS.interrupted = True
    raise KeyboardInterrupt


def quiet_unraisable(hook):
    """An interrupt that lands in a finaliser is reported by our own line, not by an ignored traceback."""
    def handle(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)
    return handle


def main(argv: list[str] | None = None) -> int:
    global PROGRESS
    PROGRESS = Progress()
    # our handler replaces Python's own only: an ignored SIGINT (a background job of a script) stays ignored
    main_thread = threading.current_thread() is threading.main_thread()
    catch = main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, on_sigint) if catch else None
    previous_hook, sys.unraisablehook = sys.unraisablehook, quiet_unraisable(sys.unraisablehook)
    try:
        code = run_command(argv)
    except Exception:
        if PROGRESS.interrupted:  # a library turned our KeyboardInterrupt into another error
            return interrupted()
        raise
    else:
        return interrupted() if PROGRESS.interrupted and code != 130 else code
    finally:
        sys.unraisablehook = previous_hook
        if catch:  # after a Ctrl-C, a process whose default was to die by SIGINT stays deaf to a late one
            late = PROGRESS.interrupted and previous == signal.SIG_DFL
            signal.signal(signal.SIGINT, signal.SIG_IGN if late else previous)


def run_command(argv: list[str] | None) -> int:
    try:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UserError, EnvironmentFault) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return interrupted()
    except OSError as err:
        return environment_fault(err)
