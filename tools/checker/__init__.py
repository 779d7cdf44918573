"""History checker for chaos runs (Jepsen/Porcupine style), stdlib only.

* :mod:`.history` - the ``Op`` record, JSON-lines load/save, a ``Recorder``;
* :mod:`.models` - sequential specs: ``RegisterModel`` (KV key),
  ``LogModel`` / ``AbsoluteLogModel`` (replicated log submits);
* :mod:`.linearizability` - ``check`` (Wing-Gong/Lowe search with
  memoization, like Porcupine) and ``check_partitioned`` (per key);
* :mod:`.logcheck` - ``check_log``: lost writes / duplicates / index
  mismatches between acknowledgements and the final log;
* :mod:`.report` - text reports of violations.

Typical use::

    from tools.checker import RegisterModel, check_partitioned, load_history, write_report

    result = check_partitioned(load_history("run.jsonl"), RegisterModel(), timeout_s=60)
    if not result.ok:
        write_report(result, "run.report.txt")
"""

from .history import (
    INF,
    Op,
    Recorder,
    Status,
    freeze,
    load_history,
    partition_by_key,
    prepare_history,
    save_history,
)
from .linearizability import CheckResult, PartitionedResult, Verdict, check, check_partitioned
from .logcheck import check_log
from .models import UNKNOWN, AbsoluteLogModel, Call, LogModel, Model, RegisterModel
from .report import format_report, write_report

__all__ = [
    "INF",
    "UNKNOWN",
    "AbsoluteLogModel",
    "Call",
    "CheckResult",
    "LogModel",
    "Model",
    "Op",
    "PartitionedResult",
    "Recorder",
    "RegisterModel",
    "Status",
    "Verdict",
    "check",
    "check_log",
    "check_partitioned",
    "format_report",
    "freeze",
    "load_history",
    "partition_by_key",
    "prepare_history",
    "save_history",
    "write_report",
]
