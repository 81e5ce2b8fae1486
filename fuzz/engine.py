"""The built-in fuzz engine: a reproducible mutation loop, optionally coverage-guided.

``fuzz(target, seconds=..., max_inputs=..., seed=...)`` runs one target: it executes every seed, then
mutated inputs (havoc-style stacks of bit flips, byte sets, interesting integers, arithmetic, inserts,
deletes, duplicated ranges, dictionary tokens, splices with other corpus entries, truncation), drawn from a
``random.Random(seed)``: the same seed, budget in inputs and code give the same inputs (a time budget
stops at a machine-dependent point of the same sequence).

Coverage guidance (``coverage=True``): a ``sys.settrace`` hook records line-to-line edges in the
``analyzer`` package; an input that reaches an edge no earlier input reached joins the corpus (and is
mutated further). It costs about 3-5 times the throughput, and finds deeper states than blind mutation.

Every input runs under a per-input time limit (``SIGALRM``; the main thread only). A finding is any
exception out of the target (see ``fuzz.targets``) or a hang; findings are told apart by their signature
(exception type and the innermost frame in the analyzer), minimized (a bounded delta-debugging pass that
keeps the signature) and saved as ``<save_dir>/<target>-<sha1[:12]>.bin``.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

ANALYZER_DIR = str(Path(__file__).resolve().parents[1] / "analyzer") + os.sep

INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF, 0x10, 0x20, 0x40, 0x64, 0x0D, 0x0A, 0x3A, 0x20)
INTERESTING_16 = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x0100, 0x0400, 0x1000, 0x4000, 0x05DC, 0x3FFF)
INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x00010000, 0x01000000, 0xFFFFFF00, 0x00004000,
                  0x00FFFFFF)


class Hang(BaseException):
    """An input ran longer than the per-input time limit (a BaseException: ``except Exception`` in the code
    under test must not swallow it)."""


@dataclass
class Finding:
    target: str
    signature: str
    traceback: str
    data: bytes
    path: Path | None = None

    @property
    def last_line(self) -> str:
        lines = [ln for ln in self.traceback.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else self.signature


@dataclass
class Result:
    target: str
    executed: int = 0
    seconds: float = 0.0
    corpus: int = 0
    edges: int = 0
    findings: list[Finding] = field(default_factory=list)
    slowest_ms: float = 0.0

    @property
    def per_second(self) -> float:
        return self.executed / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------- time limit


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("per-input time limit exceeded")


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``Hang`` in the main thread after ``seconds`` (no limit elsewhere, or when None / 0)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------------------------- coverage


class Coverage:
    """Line-to-line edges executed in the analyzer package (``sys.settrace``), as a set of ints."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self._cur: set[int] = set()
        self._files: dict[str, bool] = {}

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        fn = frame.f_code.co_filename
        inside = self._files.get(fn)
        if inside is None:
            inside = self._files[fn] = fn.startswith(ANALYZER_DIR)
        if not inside:
            return None
        code_id = id(frame.f_code)
        prev = [frame.f_lineno]
        cur = self._cur

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line":
                ln = frame.f_lineno
                cur.add(hash((code_id, prev[0], ln)))
                prev[0] = ln
            return local

        return local

    @contextmanager
    def recording(self) -> Iterator[set[int]]:
        self._cur = set()
        old = sys.gettrace()
        sys.settrace(self._global)
        try:
            yield self._cur
        finally:
            sys.settrace(old)

    def new(self, edges: set[int]) -> bool:
        fresh = edges - self.seen
        if fresh:
            self.seen |= fresh
            return True
        return False


# ---------------------------------------------------------------------------------------------- mutator


class Mutator:
    def __init__(self, rng: random.Random, max_len: int, dictionary: list[bytes]) -> None:
        self.rng = rng
        self.max_len = max_len
        self.dictionary = dictionary

    def _pos(self, buf: bytearray, end_ok: bool = False) -> int:
        n = len(buf) + (1 if end_ok else 0)
        if n <= 0:
            return 0
        r = self.rng
        if r.random() < 0.5 and n > 64:  # headers matter most: bias towards the start
            return r.randrange(min(n, 64))
        return r.randrange(n)

    def _one(self, buf: bytearray, corpus: list[bytes]) -> None:
        r = self.rng
        op = r.randrange(14)
        if not buf and op < 9:
            op = 9
        if op == 0:  # flip a bit
            i = self._pos(buf)
            buf[i] ^= 1 << r.randrange(8)
        elif op == 1:  # random byte
            buf[self._pos(buf)] = r.randrange(256)
        elif op == 2:  # interesting 8
            buf[self._pos(buf)] = r.choice(INTERESTING_8)
        elif op in (3, 4):  # interesting 16 / 32, either byte order
            width = 2 if op == 3 else 4
            v = r.choice(INTERESTING_16 if op == 3 else INTERESTING_32)
            i = self._pos(buf)
            buf[i: i + width] = v.to_bytes(width, "big" if r.random() < 0.5 else "little")
        elif op == 5:  # arithmetic on a byte / word
            i = self._pos(buf)
            width = r.choice((1, 2, 4))
            seg = bytes(buf[i: i + width])
            if seg:
                order: Literal["big", "little"] = "big" if r.random() < 0.5 else "little"
                v = (int.from_bytes(seg, order) + r.randint(-35, 35)) % (1 << (8 * len(seg)))
                buf[i: i + len(seg)] = v.to_bytes(len(seg), order)
        elif op == 6:  # delete a range
            i = self._pos(buf)
            del buf[i: i + r.choice((1, 1, 2, 4, 8, 16, 64, 512))]
        elif op == 7:  # duplicate a range
            i = self._pos(buf)
            n = r.choice((1, 2, 4, 16, 64, 256))
            j = self._pos(buf, end_ok=True)
            buf[j:j] = buf[i: i + n]
        elif op == 8:  # overwrite with a copy of another range
            i, j = self._pos(buf), self._pos(buf)
            n = r.choice((1, 2, 4, 8, 32))
            buf[j: j + n] = buf[i: i + n]
        elif op == 9:  # insert random bytes
            j = self._pos(buf, end_ok=True)
            buf[j:j] = r.randbytes(r.choice((1, 1, 2, 4, 8, 32)))
        elif op == 10 and self.dictionary:  # dictionary token (insert or overwrite)
            tok = r.choice(self.dictionary)
            j = self._pos(buf, end_ok=True)
            if r.random() < 0.5:
                buf[j:j] = tok
            else:
                buf[j: j + len(tok)] = tok
        elif op == 11 and corpus:  # splice: head of this, tail of another
            other = r.choice(corpus)
            if other:
                i = self._pos(buf, end_ok=True)
                j = r.randrange(len(other))
                buf[i:] = other[j:]
        elif op == 12 and corpus:  # insert a piece of another input
            other = r.choice(corpus)
            if other:
                i = r.randrange(len(other))
                piece = other[i: i + r.choice((4, 16, 64, 256, 1024))]
                j = self._pos(buf, end_ok=True)
                buf[j:j] = piece
        elif op == 13 and len(buf) > 1:  # truncate
            del buf[r.randrange(1, len(buf)):]

    def mutate(self, data: bytes, corpus: list[bytes]) -> bytes:
        buf = bytearray(data)
        for _ in range(1 << self.rng.randrange(5)):  # 1, 2, 4, 8 or 16 stacked mutations
            self._one(buf, corpus)
        if len(buf) > self.max_len:
            del buf[self.max_len:]
        return bytes(buf)


# ---------------------------------------------------------------------------------------------- running


def signature(exc: BaseException, tb: TracebackType | None) -> str:
    """Exception type and the innermost analyzer frame (file:function:line) of a finding."""
    where = "?"
    for fs in traceback.extract_tb(tb):
        if fs.filename.startswith(ANALYZER_DIR):
            rel = os.path.relpath(fs.filename, os.path.dirname(ANALYZER_DIR.rstrip(os.sep)))
            where = f"{rel}:{fs.name}:{fs.lineno}"
    if isinstance(exc, Hang):
        return "Hang"
    return f"{type(exc).__name__}@{where}"


def run_one(fn: Callable[[bytes], None], data: bytes, timeout: float | None) -> tuple[str, str] | None:
    """Run one input; None when fine, else (signature, formatted traceback)."""
    try:
        with time_limit(timeout):
            fn(data)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # every escape is a finding
        return signature(exc, exc.__traceback__), "".join(traceback.format_exception(exc))
    return None


def minimize(fn: Callable[[bytes], None], data: bytes, sig: str, timeout: float | None,
             budget_s: float = 20.0) -> bytes:
    """A smaller input with the same signature (delta debugging: drop ever smaller ranges, then ends)."""
    if sig == "Hang":
        return data
    deadline = time.monotonic() + budget_s
    best = data
    n = 2
    while len(best) > 1 and time.monotonic() < deadline:
        step = max(1, len(best) // n)
        progressed = False
        i = 0
        while i < len(best) and time.monotonic() < deadline:
            cand = best[:i] + best[i + step:]
            got = run_one(fn, cand, timeout)
            if got is not None and got[0] == sig:
                best = cand
                progressed = True
            else:
                i += step
        if not progressed:
            if step == 1:
                break
            n = min(n * 2, len(best))
    return best


def save(finding: Finding, save_dir: Path) -> Path:
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"{finding.target}-{hashlib.sha1(finding.data).hexdigest()[:12]}.bin"
    path.write_bytes(finding.data)
    finding.path = path
    return path


def fuzz(target: str, fn: Callable[[bytes], None], seeds: list[bytes], *, seconds: float = 60.0,
         max_inputs: int | None = None, seed: int = 0, timeout: float | None = 10.0, coverage: bool = False,
         max_len: int = 1 << 16, dictionary: list[bytes] | None = None, save_dir: Path | None = None,
         known: set[str] | None = None, minimize_s: float = 20.0, max_corpus: int = 4096,
         log: Callable[[str], None] | None = None) -> Result:
    """Fuzz ``fn`` for ``seconds`` (or ``max_inputs`` inputs, whichever first). ``known``: signatures not to
    report again (the saved regressions'). Returns the counts and the findings (new signatures only)."""
    rng = random.Random(f"{target}:{seed}")
    mut = Mutator(rng, max_len, dictionary or [])
    cov = Coverage() if coverage else None
    corpus: list[bytes] = []
    res = Result(target)
    seen_sigs = set(known or ())
    start = time.monotonic()
    deadline = start + seconds
    last_log = start

    def execute(data: bytes) -> None:
        t0 = time.perf_counter()
        if cov is not None:
            with cov.recording() as edges:
                got = run_one(fn, data, timeout)
            if got is None and cov.new(edges) and len(corpus) < max_corpus:
                corpus.append(data)
        else:
            got = run_one(fn, data, timeout)
        res.slowest_ms = max(res.slowest_ms, (time.perf_counter() - t0) * 1000)
        res.executed += 1
        if got is None:
            return
        sig, tb = got
        if sig in seen_sigs:
            return
        seen_sigs.add(sig)
        small = minimize(fn, data, sig, timeout, minimize_s) if minimize_s > 0 else data
        again = run_one(fn, small, timeout)
        finding = Finding(target, sig, again[1] if again is not None else tb, small)
        if save_dir is not None:
            save(finding, save_dir)
        res.findings.append(finding)
        if log:
            log(f"[{target}] FINDING {sig} ({len(small)} bytes)"
                + (f" -> {finding.path}" if finding.path else "") + "\n" + finding.last_line)

    def more() -> bool:
        return time.monotonic() < deadline and (max_inputs is None or res.executed < max_inputs)

    for s in seeds:
        if not more():
            break
        execute(s[:max_len] if len(s) > max_len else s)
        if cov is None:
            corpus.append(s)
    if not corpus:
        corpus = [s for s in seeds] or [b""]
    base = list(seeds) or [b""]
    while more():
        # parents: the coverage corpus (newest favoured) and now and then a seed
        if rng.random() < 0.2:
            parent = rng.choice(base)
        elif rng.random() < 0.3:
            parent = corpus[-1 - min(len(corpus) - 1, int(rng.expovariate(0.1)))]
        else:
            parent = rng.choice(corpus)
        execute(mut.mutate(parent, corpus))
        if log and time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            log(f"[{target}] {res.executed} inputs, {res.executed / (last_log - start):.0f}/s, corpus {len(corpus)}"
                + (f", edges {len(cov.seen)}" if cov else ""))
    res.seconds = time.monotonic() - start
    res.corpus = len(corpus)
    res.edges = len(cov.seen) if cov else 0
    return res
