import sys

try:
    from meap_bench.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before the CLI's own handler is in place (or after it is gone)
    print("interrupted", file=sys.stderr)
    code = 130
sys.exit(code)
