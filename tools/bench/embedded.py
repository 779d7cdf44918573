"""``python -m tools.bench embedded --nodes 3 --payload 10 --window 1000 --duration-s 10``

The library use case: node n1 runs in a fresh process as an ``EmbeddedNode`` and takes
leadership; the other nodes are ordinary node processes. Proposals are made inside the
leader's process with ``--window`` in flight; each completes when committed and applied
(``embedded_node.py`` does the work, the same worker ``compare`` uses). ``--api callback``
(the default) proposes with ``EmbeddedNode.submit_cb``, like PySyncObj's ``callback=``;
``--api coroutine`` awaits ``EmbeddedNode.submit`` in ``--window`` coroutines. The worker
process tunes its GC (``EmbeddedNode.start(tune_gc=True)``) unless ``--no-tune-gc``.
Prints the figures and, last, one key=value line.
"""

from __future__ import annotations

import argparse

from tools.bench import embedded_node


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench embedded", description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--storage", default="file", choices=["file", "sqlite", "memory"])
    ap.add_argument("--api", default="callback", choices=["callback", "coroutine"])
    ap.add_argument("--no-tune-gc", dest="tune_gc", action="store_false")
    a = ap.parse_args(argv)
    r = embedded_node.run(a.nodes, a.payload, a.window, a.duration_s, a.storage, api=a.api,
                          tune_gc=a.tune_gc)
    if "error" in r:
        print(f"# failed: {r['error']}")
        return 1
    fsync = "off" if a.storage == "memory" else "on"
    cpu = r.get("cpu_s_per_1k_ops", {})
    print(f"# storage={a.storage} fsync={fsync} api={a.api} tune_gc={a.tune_gc} "
          f"errors={r.get('errors', 0)} cpu_s_per_1k_ops={cpu}")
    print(f"udpraft embedded nodes={a.nodes} payload={a.payload} window={a.window} "
          f"storage={a.storage} api={a.api} ops_per_s={r['ops_per_s']:.0f} "
          f"p50_ms={r['p50_ms']:.2f} p99_ms={r['p99_ms']:.2f}")
    return 0
