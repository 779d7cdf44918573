"""The layering of ARCHITECTURE.md, checked by walking every module's AST.

- the pure layers (core, wire, reliability, sim, kv state machine) touch no IO, clock or
  thread module, and never the module-level ``random`` functions (randomness is injected);
- core imports only the standard library and itself;
- wire and reliability know nothing of Raft's rules (no core.raft / progress / log);
- the launcher reaches nodes only through processes, signals, ports and files.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMPURE = {"asyncio", "socket", "time", "os", "threading", "selectors", "uvloop", "subprocess"}
GLOBAL_RANDOM = {"random", "randint", "choice", "shuffle", "uniform", "randrange", "sample", "seed"}
PURE_DIRS = ["udpraft/core", "udpraft/wire", "udpraft/reliability", "udpraft/sim"]


def modules(rel: str) -> list[Path]:
    return sorted((ROOT / rel).rglob("*.py"))


def imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def impurities(path: Path) -> list[str]:
    bad = [f"{path}:{ln} imports {m}" for m, ln in imports(path) if m.split(".")[0] in IMPURE]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr in GLOBAL_RANDOM
        ):
            bad.append(f"{path}:{node.lineno} calls random.{node.func.attr}() (global generator)")
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            for a in node.names:
                if a.name in GLOBAL_RANDOM:
                    bad.append(f"{path}:{node.lineno} imports random.{a.name}")
    return bad


@pytest.mark.parametrize("rel", PURE_DIRS)
def test_pure_layers_touch_no_io_clock_or_global_random(rel: str) -> None:
    mods = modules(rel)
    assert mods, f"{rel} has no modules"
    bad = [b for p in mods for b in impurities(p)]
    assert not bad, "\n".join(bad)


def test_kv_state_machine_is_pure() -> None:
    # the node-side shell: HTTP face, node glue, write forwarding between nodes
    mods = [p for p in modules("udpraft/kv") if p.name not in {"http.py", "server.py", "forwarding.py"}]
    bad = [b for p in mods for b in impurities(p)]
    assert not bad, "\n".join(bad)


def test_core_imports_only_stdlib_and_itself() -> None:
    allowed_stdlib = {
        "__future__",
        "collections",
        "dataclasses",
        "enum",
        "typing",
        "random",
        "bisect",
        "heapq",
        "itertools",
        "functools",
        "math",
        "array",  # pure containers: RaftLog's compact columns (core/columns.py)
        "operator",
    }
    bad = []
    for p in modules("udpraft/core"):
        for m, ln in imports(p):
            top = m.split(".")[0]
            if (m.startswith("udpraft.") and not m.startswith("udpraft.core")) or (
                top != "udpraft" and top not in allowed_stdlib
            ):
                bad.append(f"{p}:{ln} imports {m}")
    assert not bad, "\n".join(bad)


def test_wire_and_reliability_know_no_raft_rules() -> None:
    forbidden = ("udpraft.core.raft", "udpraft.core.progress", "udpraft.core.log", "udpraft.io")
    bad = [
        f"{p}:{ln} imports {m}"
        for rel in ("udpraft/wire", "udpraft/reliability")
        for p in modules(rel)
        for m, ln in imports(p)
        if m.startswith(forbidden)
    ]
    assert not bad, "\n".join(bad)


def test_launcher_reaches_nodes_only_through_processes() -> None:
    forbidden = ("udpraft.core", "udpraft.io", "udpraft.storage", "udpraft.reliability")
    bad = [
        f"{p}:{ln} imports {m}"
        for p in modules("launcher")
        for m, ln in imports(p)
        if m.startswith(forbidden)
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_itself_catches_an_impure_module(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nimport random\nx = random.choice([1])\nfrom os import path\n")
    found = impurities(bad)
    assert len(found) == 3, found
