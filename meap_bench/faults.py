"""Fault-injection points for the reliability tests: `MEAP_BENCH_FAULT=<point>:<action>[@<n>]` makes the
n-th pass (default: the first) through `fault_point(<point>)` act as if the machine failed right there.

Actions: `kill` (SIGKILL: power loss), `int` (SIGINT: Ctrl-C), `swallowed` (a Ctrl-C that a finaliser
swallows), `enospc` (the disk is full), `pause` (sleep until killed: a process that holds the run
directory). Unset, a point costs one dict lookup."""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "MEAP_BENCH_FAULT"
_passes: dict[str, int] = {}


def fault_point(name: str, path: object = None) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    action, _, nth = rest.partition("@")
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != int(nth or 1):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "int":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises KeyboardInterrupt here
    elif action == "swallowed":  # Ctrl-C landing in a library's finaliser, where Python ignores exceptions
        class Finaliser:
            def __del__(self) -> None:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)

        Finaliser()
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path or f"<fault point {name}>"))
    elif action == "pause":
        while True:
            time.sleep(1)
