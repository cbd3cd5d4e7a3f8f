import signal
import sys

try:
    from meap_bench.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before the CLI's own handler is in place (or after it is gone)
    print("interrupted", file=sys.stderr)
    code = 130
signal.signal(signal.SIGINT, signal.SIG_IGN)  # during interpreter shutdown it would kill silently (-2)
sys.exit(code)
