"""Loopback load test of ``analyzer live``: packets per second handled without drops (needs root).

In a network namespace created for the run (``anl-live-<random>``, loopback only, deleted at the end) nginx
serves record.py's files; ``analyzer live -i lo --filter "tcp port 8080"`` captures while HTTP/1.1 keep-alive
requests arrive at a fixed rate (``--clients`` serial ``curl --rate`` processes), one level after another,
each for ``--seconds``; the last level is unpaced ``wrk``. For each level the capture is stopped with SIGINT
and its summary read: packets, packets/s over the capture, kernel drops (the socket's PACKET_STATISTICS) and
own drops (batches the analysis could not take). Bounded in time (levels × seconds) and count (the capture
keeps no pcap).

Usage::

    sudo .venv/bin/python bench/live_load.py                   # default levels
    sudo .venv/bin/python bench/live_load.py --seconds 5 --rates 1000 4000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _helpers() -> Any:
    spec = importlib.util.spec_from_file_location("live_netns", ROOT / "tests" / "live_netns.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_level(h: Any, ns: Any, tmp: Path, rate: int | None, seconds: int, clients: int) -> dict[str, Any]:
    """One load level: requests/s in total (None: wrk, unpaced) → the capture's figures."""
    record = h.record
    out = tmp / f"level-{rate}.json"
    live = h.start_live(ns, ["-i", "lo", "--filter", f"tcp port {record.PORT_MAIN}", "-q", "-o",
                             str(tmp / "live.html"), "--json", str(out)])
    url = f"http://127.0.0.1:{record.PORT_MAIN}/index.html"
    if rate is None:
        done = ns.run(["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds}s", url], timeout=seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    else:  # serial keep-alive curls, each paced by --rate, stopped after the level's time
        per = max(rate // clients, 1)
        glob = f"{url}?n=[1-{per * seconds * 2}]"
        curls = [ns.popen([record._tool("curl"), "-s", "--rate", f"{per}/s", "-o", "/dev/null", glob],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(clients)]
        time.sleep(seconds)
        for proc in curls:
            record._stop(proc, signal.SIGTERM, 5)
    time.sleep(0.5)
    code, _, err = h.finish_live(live, timeout_s=300)
    if code != 0:
        raise RuntimeError(f"analyzer live exited with {code}: {err.strip()}")
    s = json.loads(out.read_text())["summary"]
    duration = s.get("duration_s") or seconds
    return {
        "offered_rps": rate if rate is not None else "wrk (unpaced)",
        "packets": s["packets_read"],
        "packets_per_s": round(s["packets_read"] / duration) if duration else 0,
        "transactions": s["transactions"],
        "kernel_drops": s["kernel_drops"],
        "own_drops": s["live_own_drops"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each load level")
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 2000, 4000, 8000],
                        help="requests/s of the paced levels (then one unpaced wrk level)")
    parser.add_argument("--clients", type=int, default=4, help="keep-alive connections per level")
    args = parser.parse_args()
    h = _helpers()
    reason = h.missing_requirements()
    if reason is not None:
        print(f"live_load: cannot run: {reason}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="anl-live-load-") as tmp_name, h.namespace() as ns:
        tmp = Path(tmp_name)
        h.start_nginx(ns, tmp, "pipelining")
        for rate in [*args.rates, None]:
            row = run_level(h, ns, tmp, rate, args.seconds, args.clients)
            rows.append(row)
            print(json.dumps(row), flush=True)
    clean = [r["packets_per_s"] for r in rows if r["kernel_drops"] == 0 and r["own_drops"] == 0]
    print(f"highest packets/s without drops: {max(clean) if clean else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
