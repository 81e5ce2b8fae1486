"""Helpers for live-capture tests and the live load benchmark: a network namespace, nginx in it, and
``analyzer live`` started inside it.

Everything runs in a namespace created here (``anl-live-<random>``) on its loopback only, and is deleted
when the context ends; processes are stopped by their PID. nginx's configuration, static files and the
scenario clients (with the truth they record) are ``captures/record.py``'s, loaded from its path.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder import load_record

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("ip", "nginx", "curl", "ss")


record = load_record()


def missing_requirements() -> str | None:
    """Why live tests cannot run here (not root, a tool missing, no namespaces, no scapy), or None."""
    if os.geteuid() != 0:
        return "live capture in a network namespace needs root"
    missing = [t for t in TOOLS if record.find_tool(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (tools/install-system-deps.sh installs them)"
    if importlib.util.find_spec("scapy") is None:
        return "scapy is not installed (pip install -e '.[test]')"
    return None


@dataclass
class Namespace:
    name: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def prefix(self) -> list[str]:
        return [record._tool("ip"), "netns", "exec", self.name]

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen([*self.prefix, *args], **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, args: Sequence[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout, check=False,
                              **kwargs)


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace with ``lo`` up (MTU 1500, no GSO super-packets, as record.py); deleted at the end,
    with every process started through it stopped first."""
    ip = record._tool("ip")
    ns = Namespace(f"anl-live-{secrets.token_hex(4)}")
    done = subprocess.run([ip, "netns", "add", ns.name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip netns add: {done.stderr.strip()}")
    try:
        for cmd in (["link", "set", "lo", "mtu", "1500"], ["link", "set", "lo", "gso_max_segs", "1"],
                    ["link", "set", "lo", "up"]):
            done = subprocess.run([ip, "-n", ns.name, *cmd], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"ip {' '.join(cmd)}: {done.stderr.strip()}")
        yield ns
    finally:
        for proc in reversed(ns.procs):
            record._stop(proc, signal.SIGTERM, 5)
        subprocess.run([ip, "netns", "delete", ns.name], capture_output=True, check=False)


def start_nginx(ns: Namespace, tmp: Path, scenario: str = "pipelining") -> subprocess.Popen[bytes]:
    """record.py's nginx (the scenario's keep-alive settings) inside ``ns``, listening when this returns."""
    prefix = tmp / "nginx"
    prefix.mkdir()
    os.chmod(tmp, 0o755)
    conf = record._prepare_nginx(record.SCENARIO_BY_NAME[scenario], prefix)
    proc = ns.popen([record._tool("nginx"), "-p", f"{prefix}/", "-e", f"{prefix}/error.log", "-c", str(conf)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record._wait_listening(ns.prefix, record.PORT_MAIN, proc, "nginx")
    return proc


def start_live(ns: Namespace, args: Sequence[str], timeout_s: float = 20, prefix: Sequence[str] = (),
               cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """``PREFIX analyzer live ARGS`` in ``ns`` (every prefix command execs the next: same PID); returns once
    it says it is listening (stderr stays a pipe)."""
    proc = ns.popen([*prefix, *record.analyzer_command(), "live", *args], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, cwd=cwd)
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    while b"listening on" not in seen:
        if proc.poll() is not None or time.monotonic() > deadline:
            rest = proc.stderr.read() if proc.poll() is not None else b""
            raise RuntimeError(f"analyzer live did not start: {(seen + rest).decode(errors='replace')}")
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            seen += os.read(proc.stderr.fileno(), 65536)
    return proc


def finish_live(proc: subprocess.Popen[bytes], sig: int | None = signal.SIGINT, timeout_s: float = 60
                ) -> tuple[int, str, str]:
    """Send ``sig`` (by PID) unless None, then wait: (exit code, stdout, stderr)."""
    if sig is not None and proc.poll() is None:
        os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@dataclass
class Client:
    """A record.py scenario client running in the namespace; its truth is read when it is done."""

    proc: subprocess.Popen[bytes]
    truth: dict[str, Any] | None = None

    def wait_truth(self, timeout_s: float = 60) -> dict[str, Any]:
        import json

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"client failed (exit {self.proc.poll()})")
        self.truth = json.loads(line)
        return self.truth

    def close(self) -> None:
        """Let the client end (connections it keeps open close now)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def run_client(ns: Namespace, scenario: str, tmp: Path) -> Client:
    proc = ns.popen([sys.executable, str(record.THIS_FILE), "_client", scenario], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "ANZ_REC_DIR": str(tmp)})
    return Client(proc)
