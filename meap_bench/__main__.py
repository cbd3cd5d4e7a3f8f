import os
import signal
import sys

try:
    from meap_bench.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before the CLI's own handler is in place (or after it is gone)
    print("interrupted", file=sys.stderr)
    code = 130
signal.signal(signal.SIGINT, signal.SIG_IGN)  # during interpreter shutdown it would kill silently (-2)
if code == 130:
    # Everything is on disk and closed. Leave at once: an interrupt that landed inside a library's import can
    # make the interpreter's shutdown re-raise SIGINT (exit -2) or print errors of half-imported modules.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
sys.exit(code)
