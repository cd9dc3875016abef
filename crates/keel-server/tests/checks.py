"""What the SDK scripts share: named checks, and how a script ends.

`tests/support/mod.rs` runs each script with this directory on PYTHONPATH
(by hand: PYTHONPATH=crates/keel-server/tests).
"""
import sys
import time

failures = []
_started = time.monotonic()


def check(name, cond, detail=""):
    """Prints `ok   name` and the seconds since the script started, or
    `FAIL name detail` and counts the failure."""
    if cond:
        print(f"ok   {name} ({time.monotonic() - _started:.2f}s)")
    else:
        print(f"FAIL {name} {detail}")
        failures.append(name)


def conclude(*lines):
    """Exits 1 naming the failed checks; else prints `lines` (a FACTS line,
    the script's done marker)."""
    if failures:
        print(f"{len(failures)} failed: {failures}")
        sys.exit(1)
    for line in lines:
        print(line)
