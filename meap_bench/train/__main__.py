"""`python -m meap_bench.train ...`: the train subcommand without the rest of the CLI (for machines
that have only the training dependencies)."""

import argparse
import sys

from meap_bench.errors import UserError
from meap_bench.train.command import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meap_bench.train")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
