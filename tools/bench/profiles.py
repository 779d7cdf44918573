"""Sampling profiles of benchmark node processes (py-spy), summarised as text.

How this works: ``start_spies`` runs ``py-spy record --nonblocking -f raw`` against each
node PID for the load window (a few hundred samples a second, idle threads excluded) and
writes ``DIR/<run>-<node>.txt`` (folded stacks: ``frame;frame;... count``).
``summarize`` reads one such file and prints, per thread, the share of samples, then the
functions with the most samples on top of the stack (self) and anywhere in it (inclusive).
py-spy is optional: without it, profiling is skipped with a message.

    python -m tools.bench.profiles DIR/*.txt     # summaries of recorded profiles
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path


def _py_spy() -> str | None:
    cand = Path(sys.executable).with_name("py-spy")
    return str(cand) if cand.exists() else shutil.which("py-spy")


def start_spies(out_dir: Path, pids: dict[str, int], duration_s: float,
                rate: int = 250) -> list[subprocess.Popen[bytes]]:
    exe = _py_spy()
    if exe is None:
        print("# profile: py-spy not found; skipping profiles", file=sys.stderr)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in pids.items():
        out = out_dir / f"{name}.txt"
        spies.append(subprocess.Popen(
            [exe, "record", "-p", str(pid), "-d", str(max(1, int(duration_s) - 1)), "-r", str(rate),
             "-f", "raw", "-o", str(out), "--nonblocking", "--threads", "-F"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    return spies


def wait_spies(spies: list[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """Let each py-spy finish writing its file; stop (by PID) one that hangs."""
    for sp in spies:
        try:
            sp.wait(timeout_s)
        except subprocess.TimeoutExpired:
            sp.kill()
            sp.wait(5)


def summarize(path: Path, top: int = 20) -> str:
    total = 0
    threads: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, n_s = line.rpartition(" ")
        n = int(n_s)
        frames = stack.split(";")
        total += n
        threads[frames[0].split(":")[0] + ":" + frames[0].split(":")[-1].strip()] += n
        leaf[frames[-1]] += n
        for f in set(frames[1:]):
            incl[f] += n
    if not total:
        return f"{path.name}: no samples"
    out = [f"== {path.name}: {total} samples (idle excluded)"]
    out += [f"  thread {t}: {100 * c / total:.0f}%" for t, c in threads.most_common(4)]
    out.append("  -- self (top of stack)")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in leaf.most_common(top)]
    out.append("  -- inclusive")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top + 10)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    for p in paths:
        print(summarize(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
