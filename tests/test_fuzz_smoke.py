"""Fuzz smoke run (issue 8): every fuzz target (``fuzz/targets.py``) for a bounded budget, deterministic seed.

Each target runs its seeds (the committed captures, slices of them, real protocol bytes) and then mutated
inputs until ``SMOKE_INPUTS[target]`` inputs or ``SMOKE_SECONDS`` have passed, whichever comes first (about
90 s for all targets on a 2-core machine; the input count is what makes a run reproducible, the time cap only
protects slow machines). No input may crash (see ``fuzz.targets``); a crash whose input is already saved in
tests/fuzz_regressions (an open xfail there) is not reported twice. The executed-input counts are printed
(``pytest -s`` or ``-rA``), recorded as junit properties and in the pytest cache (``fuzz/smoke``).

Longer runs: ``make fuzz FUZZ_SECONDS=600`` or ``python -m fuzz.run --target all --seconds 600``.
``ANALYZER_FUZZ_SCALE=10`` multiplies this smoke run's budget.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fuzz/ package
from fuzz import corpus
from fuzz.engine import fuzz
from fuzz.run import known_signatures
from fuzz.targets import MAX_LEN, TARGETS

SCALE = float(os.environ.get("ANALYZER_FUZZ_SCALE", "1"))
SMOKE_SECONDS = 12.0 * SCALE
SMOKE_INPUTS = {"pcap": 250, "tcp": 400, "decode": 2500, "http1": 4000, "tls": 3000, "tls_hello": 30000,
                "http2": 3000, "quic": 4000}
SEED = 20240601
PER_INPUT_LIMIT_S = 10.0


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_smoke(name: str, record_property: Callable[[str, Any], None], request: pytest.FixtureRequest) -> None:
    res = fuzz(name, TARGETS[name], corpus.seeds(name), seconds=SMOKE_SECONDS,
               max_inputs=int(SMOKE_INPUTS[name] * SCALE), seed=SEED, timeout=PER_INPUT_LIMIT_S, coverage=False,
               max_len=MAX_LEN[name], dictionary=corpus.DICTIONARY.get(name), save_dir=None,
               known=known_signatures(name, PER_INPUT_LIMIT_S), minimize_s=5.0)
    line = (f"fuzz smoke {name}: {res.executed} inputs in {res.seconds:.1f} s ({res.per_second:.0f}/s), "
            f"slowest {res.slowest_ms:.0f} ms")
    print(line)
    record_property(f"fuzz_{name}_inputs", res.executed)
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        counts = cache.get("fuzz/smoke", {})
        counts[name] = {"inputs": res.executed, "seconds": round(res.seconds, 1)}
        cache.set("fuzz/smoke", counts)
    assert res.executed >= min(len(corpus.seeds(name)), 20), line
    assert not res.findings, "\n\n".join(
        f"{f.signature}: replay with fuzz.targets.{TARGETS[name].__name__}({f.data!r})\n{f.traceback}"
        for f in res.findings)
