"""The coverage gate of issue #6: branch coverage of the core modules, printed, and >= 95 % each.

Reads the ``.coverage`` data that ``pytest --cov=identity_graph --cov-branch`` left (the
Makefile's ``test`` target runs both), prints statements, branches and the combined
percentage per module of the package, and exits 1 when one of ``GATED`` is below ``FLOOR``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import coverage

GATED = ("events", "rules", "resolver", "store")
FLOOR = 95.0


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    package = Path(__file__).resolve().parents[1] / "identity_graph"
    # The whole package's table, as `coverage report` prints it (branches included).
    cov.report(include=[str(package / "*.py")], skip_empty=True)
    failed = []
    for name in GATED:
        percent = cov.report(include=[str(package / f"{name}.py")], file=io.StringIO())
        ok = percent >= FLOOR
        print(f"gate {name + '.py':<12} {percent:6.2f}% branch coverage (>= {FLOOR:.0f}%): {'OK' if ok else 'FAILED'}")
        if not ok:
            failed.append(name)
    if failed:
        print(f"coverage gate FAILED: {', '.join(failed)}")
        return 1
    print("coverage gate OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
