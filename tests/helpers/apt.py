"""Install a Debian package a test needs (etcd, chromium) when `make test` could not.

Returns a reason to skip when it cannot be had (no apt-get, not root, archive unreachable),
None once ``binary`` exists. A file lock keeps parallel pytest workers from racing dpkg.
A failure other than an unreachable archive raises: that is a real problem to look at.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

UNREACHABLE = ("Temporary failure resolving", "Could not resolve", "Failed to fetch",
               "Unable to fetch", "Network is unreachable", "Connection failed",
               "Unable to locate package")


def _apt(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def ensure_package(binary: str, packages: list[str], timeout_s: float = 600) -> str | None:
    if os.path.exists(binary):
        return None
    what = " ".join(packages)
    if shutil.which("apt-get") is None:
        return f"{binary} is not installed and there is no apt-get to install {what}"
    if os.geteuid() != 0:
        return f"{binary} is not installed and installing {what} needs root (apt-get)"
    with open(f"/tmp/udpraft-apt-{packages[0]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(binary):
            return None
        try:
            up = _apt(["update"], 300)
            out = up.stdout + up.stderr
            if up.returncode != 0 or any(s in out for s in UNREACHABLE[:5]):
                return f"apt is unreachable, cannot install {what}: {out.strip()[-300:]}"
            inst = _apt(["install", "-y", *packages], timeout_s)
        except subprocess.TimeoutExpired:
            return "apt-get timed out: the package archive is unreachable"
        out = inst.stdout + inst.stderr
        if inst.returncode != 0:
            if any(s in out for s in UNREACHABLE):
                return f"apt is unreachable, cannot install {what}: {out.strip()[-300:]}"
            raise RuntimeError(f"apt-get install {what} failed:\n{out[-2000:]}")
    return None if os.path.exists(binary) else f"{what} installed no {binary}"
