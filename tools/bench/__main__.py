"""Dispatch ``python -m tools.bench MODE [args]`` to the mode's module."""

from __future__ import annotations

import importlib
import sys

MODES = {
    "core": "tools.bench.core",
    "submit": "tools.bench.submit",
    "embedded": "tools.bench.embedded",
    "kv": "tools.bench.kv",
    "compare": "tools.bench.compare",
    "memory": "tools.bench.memory",
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        print(f"usage: python -m tools.bench {{{','.join(MODES)}}} [options]", file=sys.stderr)
        return 2
    try:
        mod = importlib.import_module(MODES[sys.argv[1]])
    except ModuleNotFoundError as e:
        print(f"mode {sys.argv[1]!r} is not available yet: {e}", file=sys.stderr)
        return 2
    return int(mod.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
