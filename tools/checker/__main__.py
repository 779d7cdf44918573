"""Command line: ``python -m tools.checker HISTORY.jsonl [--model register|log|abslog]``.

Checks the history per key (P-compositionality), prints the report and
exits 0 (ok), 1 (illegal) or 2 (unknown / timeout).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .history import load_history
from .linearizability import check_partitioned
from .models import AbsoluteLogModel, LogModel, Model, RegisterModel
from .report import format_report, write_report

_MODELS: dict[str, type[Model[Any]]] = {
    "register": RegisterModel,
    "log": LogModel,
    "abslog": AbsoluteLogModel,
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.checker", description=__doc__)
    ap.add_argument("history", help="JSON-lines history file")
    ap.add_argument("--model", choices=sorted(_MODELS), default="register")
    ap.add_argument("--timeout", type=float, default=None, help="seconds (default: none)")
    ap.add_argument("--report", default=None, help="also write the report to this file")
    args = ap.parse_args(argv)

    result = check_partitioned(load_history(args.history), _MODELS[args.model](), args.timeout)
    sys.stdout.write(format_report(result))
    if args.report:
        write_report(result, args.report)
    return {"ok": 0, "illegal": 1, "unknown": 2}[result.verdict]


if __name__ == "__main__":
    raise SystemExit(main())
