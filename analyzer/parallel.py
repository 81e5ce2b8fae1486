"""Running the per-capture analysis on several cores or on a cluster, and finding the capture files.

``analyze_captures`` gives exactly what ``analyzer.pipeline.analyze`` gives for the same files (each file
analyzed apart, then ``analyzer.combine.combine`` in the order given), but spreads the files over a
process pool (``jobs``) or a running ``dask.distributed`` cluster (``scheduler``). The unit of work is one
capture file, or, with fewer files than workers, one shard of a file's flows (``Session(shard=)``: every
worker reads and decodes the whole file and analyzes the connections that hash to its shard); workers
read files by path, so a cluster's workers must see the same files (a shared or replicated file system).
Stitched captures (``stitch``) are one packet stream and run in one process.

``expand_captures`` turns the command line's files, directories and glob patterns into capture files.
This module owns process pools and cluster clients; it knows nothing of packets or protocols.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from analyzer.analysis import Analysis
from analyzer.combine import combine
from analyzer.errors import AnalyzerError
from analyzer.pipeline import MAX_SERIES_ROWS, Progress, analyze, natural_key

#: File name endings taken from a directory (anything else in it is ignored; name files directly to force).
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")


def expand_captures(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; directories → their capture files (recursively, by name ending, in natural order);
    glob patterns (``*``, ``?``, ``[``) → the files they match, in natural order. A pattern that matches
    nothing, a missing file or a directory without captures is an ``AnalyzerError``."""
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file() and _is_capture_name(p.name)]
            if not found:
                raise AnalyzerError(f"{text}: no capture files (*.pcap, *.pcapng, *.cap, optionally .gz) in "
                                    "this directory")
            out.extend(sorted(found, key=lambda p: natural_key(str(p))))
        elif not path.exists() and glob.has_magic(text):
            matched = [Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file()]
            if not matched:
                raise AnalyzerError(f"{text}: no file matches this pattern")
            out.extend(sorted(matched, key=lambda p: natural_key(str(p))))
        elif not path.exists():
            raise AnalyzerError(f"{text}: no such file")
        else:
            out.append(path)
    return out


def _is_capture_name(name: str) -> bool:
    return name.lower().endswith(CAPTURE_SUFFIXES) or any(
        name.lower().rstrip("0123456789").endswith(s) for s in (".pcap", ".pcapng"))  # tcpdump -C: x.pcap1


def _analyze_one(path: str, keylog: str | None, series_rows: int, shard: tuple[int, int] = (0, 1),
                 spill_dir: str | None = None) -> Analysis:
    """The unit of work: one capture file, or one shard of its flows (module level, so process pools and
    dask can pickle it); without metrics: ``combine`` computes them once, over all parts. ``spill_dir``:
    the part's own directory (on this machine), its spilled tables are handed back by name."""
    return analyze(path, keylog=keylog, series_rows=series_rows, shard=shard, with_metrics=False,
                   spill_dir=spill_dir)


def _tasks(paths: list[str], workers: int) -> list[tuple[str, tuple[int, int]]]:
    """(file, shard) pairs: each file whole, or, with fewer files than workers, each file split into
    ``workers // files`` shards of its flows (every worker reads the file; each analyzes its flows)."""
    n = max(1, workers // len(paths))
    return [(p, (k, n)) for p in paths for k in range(n)]


def analyze_captures(
    captures: Sequence[str | os.PathLike[str]],
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    stitch: bool = False,
    keylog: str | os.PathLike[str] | None = None,
    series_rows: int = MAX_SERIES_ROWS,
    progress: Progress | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
    with_metrics: bool = True,
) -> Analysis:
    """Analyze capture files, one process (``jobs`` = 1), a pool of ``jobs`` processes, or the
    ``dask.distributed`` cluster whose scheduler is at ``scheduler`` (``tcp://host:8786``). The result does
    not depend on how the work was spread. ``spill_dir``: see ``analyze``; in one process each packet stream
    is then read in a child process (``analyze(scan_in_child=True)``), in a pool each part spills to a
    directory of its own; the cluster's workers (maybe on other machines) hand their tables back whole.
    ``with_metrics``: compute the summary's metric keys (see ``analyze``); ``analyzer report`` does not ask
    for them: it computes them with its own tables."""
    paths = [os.fspath(p) for p in captures]
    if not paths:
        raise ValueError("analyze_captures() needs at least one capture file")
    key = os.fspath(keylog) if keylog is not None else None
    if stitch or (jobs <= 1 and scheduler is None):
        return analyze(*paths, keylog=key, series_rows=series_rows, stitch=stitch, progress=progress,
                       spill_dir=spill_dir, scan_in_child=True, with_metrics=with_metrics)
    if scheduler is not None:
        return combine(_on_cluster(scheduler, paths, key, series_rows), with_metrics=with_metrics)
    tasks = _tasks(paths, jobs)
    sizes = [Path(p).stat().st_size / shard[1] for p, shard in tasks]
    part_dirs: list[str | None] = [None] * len(tasks)
    if spill_dir is not None:
        made = [Path(spill_dir) / f"part-{i}" for i in range(len(tasks))]
        for part_dir in made:
            part_dir.mkdir()
        part_dirs = [str(d) for d in made]
    parts: list[Analysis] = []
    # forkserver: no fork of a process that may hold threads (rich, a dask client); workers import once
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=get_context("forkserver")) as pool:
        done = 0.0
        for size, part in zip(sizes, pool.map(_analyze_one, [p for p, _ in tasks], [key] * len(tasks),
                                              [series_rows] * len(tasks), [sh for _, sh in tasks], part_dirs),
                              strict=True):
            parts.append(part)
            done += size
            if progress is not None:
                progress(round(done), round(sum(sizes)))
    return combine(parts, with_metrics=with_metrics)


def _on_cluster(scheduler: str, paths: list[str], keylog: str | None, series_rows: int) -> list[Analysis]:
    try:
        from distributed import Client
    except ImportError as exc:  # the optional "scale" extra
        raise AnalyzerError("--scheduler needs dask.distributed: pip install 'analyzer[scale]'") from exc
    try:
        client: Any = Client(scheduler, timeout="10s")
    except OSError as exc:
        raise AnalyzerError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from exc
    with client:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        tasks = _tasks(paths, workers)
        futures = client.map(_analyze_one, [p for p, _ in tasks], [keylog] * len(tasks),
                             [series_rows] * len(tasks), [sh for _, sh in tasks], pure=False)
        results: list[Analysis] = client.gather(futures)
    return results
