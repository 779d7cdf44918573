"""The dashboard in a real browser, on a live 3-node cluster started by ``python -m launcher``.

Headless Debian chromium (installed with apt-get when missing; the test skips, saying why,
only when it cannot be) driven by pip's playwright opens the dashboard URL from
cluster.json and, through the page only:

- sees exactly one leader, with its role in words as well as colour;
- submits a value and sees it committed in every node's log row;
- kills the leader (kill -9) and sees another node lead in a higher term, and the kill and
  the election on the timeline;
- adds 300 ms of delay to a link (both ways) and sees it on the links table, the node card
  and in the node's own /status;
- checks that the page fits a narrow window.

Screenshots go to ``artifacts/`` (gitignored) at every step; with
``UDPRAFT_DASHBOARD_SCREENSHOT=1`` (or when it is missing) the last 1280x800 one is also
copied to ``docs/dashboard.png`` for the README. Every process is stopped by PID in a
finally, even on failure.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from launcher import layout
from tests.helpers.apt import ensure_package
from tests.integration.test_launcher_cluster import published, wait_for
from tests.integration.test_launcher_cluster import status as node_status
from udpraft.config import ClusterConfig, load_cluster

# generous: a machine without chromium downloads it first (the browser part itself is
# checked to take under BROWSER_PART_S)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
BROWSER_PART_S = 90
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


# ------------------------------------------------------------------------ chromium


def ensure_chromium() -> str | None:
    """Install Debian's chromium if needed; a reason to skip, or None when it is there."""
    return ensure_package(CHROMIUM, ["chromium"], 900)


# ------------------------------------------------------------------------ cluster


def free_base_port(nodes: int) -> int:
    """A base port whose node ports and dashboard port are free, below the ephemeral range
    (as in test_launcher_cluster.py: a port lent to an outgoing connection could be taken)."""
    lo, _ = layout.ephemeral_range()
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(10_000, max(10_001, lo - layout.DASHBOARD_PORT_OFFSET - nodes))
        ports = [(base + i, k) for i in range(nodes) for k in ("udp", "tcp")]
        ports += [(base + layout.HTTP_PORT_OFFSET + i, "tcp") for i in range(nodes)]
        ports.append((base + layout.DASHBOARD_PORT_OFFSET, "tcp"))
        if all(layout.port_is_free("127.0.0.1", p, k) for p, k in ports):
            return base
    raise RuntimeError("no free port range")


def stop_everything(proc: subprocess.Popen[bytes], data_dir: Path, tmp_path: Path) -> None:
    """The launcher by PID (SIGTERM, then SIGKILL), then any node it may have left."""
    pids: set[int] = set()
    try:
        pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    except psutil.Error:
        pass
    for name in (layout.CLUSTER_FILE, layout.BOOT_FILE):
        try:
            pids |= {n.pid for n in load_cluster(data_dir / name).nodes if n.pid}
        except (OSError, ValueError):
            pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if str(tmp_path) in " ".join(p.info["cmdline"] or []):
            pids.add(p.info["pid"])
    for pid in pids:
        try:
            if "udpraft.node" in " ".join(psutil.Process(pid).cmdline()):
                os.kill(pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError):
            pass


@pytest.fixture(scope="session")
def chromium() -> str:
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ClusterConfig, Path, Callable[[], str]]]:
    data = tmp_path / "data"
    base = free_base_port(3)
    out_path = tmp_path / "launcher.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--nodes", "3", "--data-dir", str(data),
             "--base-port", str(base), "--duration-s", "170", "--plain"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)

    def output() -> str:
        return out_path.read_text(errors="replace")

    try:
        cfg = wait_for(lambda: published(data / "cluster.json"), 30, "cluster.json")
        yield cfg, data, output
    finally:
        stop_everything(proc, data, tmp_path)


# ------------------------------------------------------------------------ the test


def test_dashboard_in_a_browser(
    chromium: str, cluster: tuple[ClusterConfig, Path, Callable[[], str]], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    cfg, _data, output = cluster
    began = time.monotonic()
    assert cfg.dashboard and f"dashboard: {cfg.dashboard}" in output(), output()
    ARTIFACTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    shots: list[Path] = []

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="udpraft-chromium-", dir=tmp_path),
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800})
        try:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            def shot(name: str, full: bool = False) -> Path:
                path = ARTIFACTS / f"dashboard-{stamp}-{name}.png"
                page.screenshot(path=str(path), full_page=full)
                shots.append(path)
                return path

            page.goto(cfg.dashboard)
            expect(page.locator("#explain")).to_contain_text("A live Raft cluster")
            expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)

            # exactly one leader, named in words (not only colour)
            leaders = page.locator('.node[data-role="leader"]')
            expect(leaders).to_have_count(1, timeout=15_000)
            expect(leaders.locator(".rtext")).to_have_text("Leader")
            expect(page.locator('.node[data-role="follower"]')).to_have_count(2)
            old = leaders.get_attribute("data-node")
            old_term = int(leaders.get_attribute("data-term") or 0)
            expect(page.locator("#summary")).to_contain_text(f"Leader {old}")
            shot("1-leader")

            # submit through the page: committed on every node
            value = f"tour-{random.randrange(10**6)}"
            page.fill("#submit-value", value)
            page.click("#submit-btn")
            expect(page.locator("#action-result")).to_contain_text("committed at index",
                                                                   timeout=10_000)
            for nid in cfg.ids:
                cell = page.locator(f'#log tr[data-node="{nid}"] td[data-data="{value}"]')
                expect(cell).to_have_attribute("data-committed", "true", timeout=10_000)
            shot("2-committed")

            # kill -9 the leader through its card: someone else leads, in a higher term
            page.click(f'.node[data-node="{old}"] button[data-action="kill"]')
            expect(page.locator("#action-result")).to_contain_text(f"{old}: killed")
            new_leader = page.locator(f'.node[data-role="leader"]:not([data-node="{old}"])')
            expect(new_leader).to_have_count(1, timeout=15_000)
            new = new_leader.get_attribute("data-node")
            new_term = int(new_leader.get_attribute("data-term") or 0)
            assert new != old and new_term > old_term, (old, old_term, new, new_term)
            expect(page.locator("#timeline")).to_contain_text(f"kill {old}")
            expect(page.locator("#timeline")).to_contain_text(f"{new} wins the election")
            # the killed node comes back (the launcher restarts it) as a follower
            expect(page.locator(f'.node[data-node="{old}"]')).to_have_attribute(
                "data-role", "follower", timeout=15_000)
            expect(page.locator('.node[data-role="leader"]')).to_have_count(1)
            shot("3-new-leader")

            # 300 ms of delay on the link new leader <-> another node, both ways
            other = next(n for n in cfg.ids if n not in (new,))
            page.select_option("#link-from", new)
            page.select_option("#link-to", other)
            page.fill("#link-delay", "300")
            page.fill("#link-loss", "0")
            page.check("#link-both")
            page.click("#link-apply")
            expect(page.locator("#action-result")).to_contain_text("300 ms delay")
            for a, b in ((new, other), (other, new)):
                expect(page.locator(f'#links tr[data-link="{a}-{b}"] .fault')).to_have_text(
                    "300 ms delay", timeout=5_000)
            expect(page.locator(f'.node[data-node="{new}"] [data-f="fault"]')).to_contain_text(
                f"→ {other}: 300 ms delay")
            assert new is not None
            st = node_status(cfg.node(new).http)
            assert st is not None and st["faults"]["peers"][other]["delay_ms"] == 300.0
            page.wait_for_timeout(600)  # let the rates settle for the picture
            final = shot("4-delay")
            shot("4-delay-full", full=True)

            # a narrow window: one column, no sideways scrolling of the page
            page.set_viewport_size({"width": 420, "height": 900})
            page.wait_for_timeout(300)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"the page scrolls sideways by {overflow}px at 420px"
            shot("5-narrow", full=True)
            assert not errors, errors
        finally:
            ctx.close()

    docs = ROOT / "docs" / "dashboard.png"
    if os.environ.get("UDPRAFT_DASHBOARD_SCREENSHOT") == "1" or not docs.exists():
        shutil.copyfile(final, docs)
    took = time.monotonic() - began
    print(f"dashboard browser test: {took:.1f}s; screenshots: {', '.join(map(str, shots))}")
    assert took < BROWSER_PART_S, f"the browser part took {took:.1f}s"
