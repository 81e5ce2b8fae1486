"""Golden tables: every committed sample in captures/ gives exactly the tables stored in tests/golden/.

Compared column by column (all columns of DESIGN.md §3 and ours). Regenerate deliberately with
``pytest tests/test_golden.py --update-golden`` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import analyzer
from analyzer.tables import TABLES

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p for p in (ROOT / "captures").iterdir() if p.suffix in (".pcap", ".pcapng"))
GOLDEN = ROOT / "tests" / "golden"


def _load(path: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(path, dtype={c: ("string" if t == "string" else None) for c, t in TABLES[name].items()
                                    if t == "string"}, keep_default_na=True)


@pytest.mark.parametrize("capture", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_matches_golden_tables(capture: Path, update_golden: bool, tmp_path: Path) -> None:
    result = analyzer.analyze(str(capture))
    for name in TABLES:
        table: pd.DataFrame = getattr(result, name)
        golden = GOLDEN / f"{capture.name}.{name}.csv"
        if update_golden:
            GOLDEN.mkdir(parents=True, exist_ok=True)
            table.to_csv(golden, index=False)
            continue
        assert golden.exists(), f"no golden table {golden.name}: run pytest --update-golden"
        fresh = tmp_path / golden.name
        table.to_csv(fresh, index=False)
        expected, got = _load(golden, name), _load(fresh, name)
        assert list(got.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, atol=1e-9)
    summary_path = GOLDEN / f"{capture.name}.summary.json"
    keys = ("packets_read", "packets_analyzed", "packets_skipped", "connections", "transactions", "anomalies")
    summary = {k: result.summary[k] for k in keys}
    if update_golden:
        summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    else:
        assert summary == json.loads(summary_path.read_text())
