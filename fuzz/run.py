"""Run the fuzz targets for a time budget and report how many inputs were executed.

    python -m fuzz.run --target all --seconds 60          # 60 s per target, built-in engine, coverage-guided
    python -m fuzz.run --target http1,tls --seconds 600 --seed 7
    python -m fuzz.run --target pcap --max-inputs 500 --no-coverage
    python -m fuzz.run --target all --seconds 300 --engine atheris   # libFuzzer (pip install atheris)

Findings (exceptions escaping a target, ``*_internal_error`` anomalies, hangs beyond ``--timeout``) are
minimized and saved as ``tests/fuzz_regressions/<target>-<sha1[:12]>.bin`` (``--save-dir``), replayed by
``tests/test_fuzz_regressions.py``. Inputs whose signature a saved regression already has are not reported
again. Exit status 1 when there are new findings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz import corpus
from fuzz.engine import Result, fuzz, run_one
from fuzz.targets import MAX_LEN, ROOT, TARGETS


def known_signatures(target: str, timeout: float | None) -> set[str]:
    """Signatures of the saved regression inputs that still fail (not fixed yet): not news."""
    out = set()
    for path in corpus.regressions(target):
        got = run_one(TARGETS[target], path.read_bytes(), timeout)
        if got is not None:
            out.add(got[0])
    return out


def run_builtin(names: list[str], args: argparse.Namespace) -> list[Result]:
    results = []
    save_dir = None if args.no_save else Path(args.save_dir)
    for name in names:
        seeds = corpus.seeds(name)
        res = fuzz(name, TARGETS[name], seeds, seconds=args.seconds, max_inputs=args.max_inputs, seed=args.seed,
                   timeout=args.timeout, coverage=_coverage(name, args.coverage), max_len=MAX_LEN[name],
                   dictionary=corpus.DICTIONARY.get(name), save_dir=save_dir,
                   known=known_signatures(name, args.timeout), log=_log)
        _log(f"[{name}] executed {res.executed} inputs in {res.seconds:.1f} s ({res.per_second:.0f}/s), "
             f"corpus {res.corpus}" + (f", edges {res.edges}" if args.coverage else "")
             + f", slowest {res.slowest_ms:.0f} ms, findings {len(res.findings)}")
        results.append(res)
    return results


def _coverage(name: str, wanted: bool | None) -> bool:
    return wanted if wanted is not None else name not in ("pcap", "tcp")


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT = re.compile(r"#(\d+)\s")


def run_atheris(names: list[str], args: argparse.Namespace) -> list[Result]:
    """One libFuzzer process per target (``python -m fuzz.atheris_main``), seeded with the same corpus."""
    results = []
    save_dir = Path(args.save_dir)
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
        seed_dir = work / "corpus"
        seed_dir.mkdir()
        for i, s in enumerate(corpus.seeds(name)):
            (seed_dir / f"seed-{i:04d}").write_bytes(s[: MAX_LEN[name]])
        artifacts = work / "artifacts"
        artifacts.mkdir()
        cmd = [sys.executable, "-m", "fuzz.atheris_main", name, str(seed_dir),
               f"-max_total_time={int(args.seconds)}", f"-timeout={int(max(1, args.timeout or 10))}",
               f"-max_len={MAX_LEN[name]}", f"-seed={args.seed + 1}", f"-artifact_prefix={artifacts}/",
               "-rss_limit_mb=4096", "-print_final_stats=1"]
        if args.max_inputs:
            cmd.append(f"-runs={args.max_inputs}")
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        res = Result(name, seconds=time.monotonic() - t0)
        out = proc.stdout + proc.stderr
        done = _DONE.findall(out)
        stats = _STAT.findall(out)
        res.executed = int(done[-1][0]) if done else int(stats[-1]) if stats else 0
        for art in sorted(artifacts.iterdir()):
            data = art.read_bytes()
            got = run_one(TARGETS[name], data, args.timeout)
            from fuzz.engine import Finding, save

            finding = Finding(name, got[0] if got else art.name.split("-")[0], got[1] if got else out[-2000:], data)
            if not args.no_save:
                save(finding, save_dir)
            res.findings.append(finding)
            _log(f"[{name}] FINDING {finding.signature} -> {finding.path}\n{finding.last_line}")
        if proc.returncode not in (0,) and not res.findings:
            _log(f"[{name}] libFuzzer exited with {proc.returncode}:\n{out[-3000:]}")
        _log(f"[{name}] atheris executed {res.executed} inputs in {res.seconds:.1f} s ({res.per_second:.0f}/s), "
             f"findings {len(res.findings)}")
        shutil.rmtree(work, ignore_errors=True)
        results.append(res)
    return results


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="all", help=f"all, or a comma-separated list of: {', '.join(TARGETS)}")
    p.add_argument("--seconds", type=float, default=60.0, help="time budget per target (default 60)")
    p.add_argument("--max-inputs", type=int, default=None, help="stop a target after this many inputs")
    p.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same inputs)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-input time limit in seconds (a hang)")
    p.add_argument("--coverage", action=argparse.BooleanOptionalAction, default=None,
                   help="line-coverage guidance (built-in engine; default on, except for the pcap and tcp "
                        "targets, whose pandas-heavy analysis the tracer slows down about 20 times)")
    p.add_argument("--engine", choices=("builtin", "atheris"), default="builtin")
    p.add_argument("--save-dir", default=str(corpus.REGRESSIONS), help="where findings are saved")
    p.add_argument("--no-save", action="store_true", help="report findings without saving them")
    p.add_argument("--json", help="write the per-target counts and findings to this file")
    args = p.parse_args(argv)
    names = list(TARGETS) if args.target == "all" else [t.strip() for t in args.target.split(",") if t.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target(s): {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    results = run_atheris(names, args) if args.engine == "atheris" else run_builtin(names, args)
    total = sum(r.executed for r in results)
    secs = sum(r.seconds for r in results)
    print(f"{'target':<10} {'inputs':>10} {'seconds':>8} {'inputs/s':>9} {'corpus':>7} {'findings':>8}")
    for r in results:
        print(f"{r.target:<10} {r.executed:>10} {r.seconds:>8.1f} {r.per_second:>9.0f} {r.corpus:>7} "
              f"{len(r.findings):>8}")
    print(f"{'total':<10} {total:>10} {secs:>8.1f} {total / secs if secs else 0:>9.0f}")
    for r in results:
        for f in r.findings:
            print(f"\n{r.target}: {f.signature} ({len(f.data)} bytes) {f.path or ''}\n{f.traceback}")
    if args.json:
        Path(args.json).write_text(json.dumps([
            {"target": r.target, "executed": r.executed, "seconds": round(r.seconds, 2),
             "per_second": round(r.per_second, 1), "corpus": r.corpus, "edges": r.edges,
             "findings": [{"signature": f.signature, "path": str(f.path) if f.path else None,
                           "last_line": f.last_line} for f in r.findings]}
            for r in results], indent=2) + "\n")
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
