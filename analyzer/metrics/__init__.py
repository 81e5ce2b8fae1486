"""Metrics: pure functions from the record tables to the figures the report and the summary show.

This package owns the definitions of every metric (each module's ``DEFINITIONS``, merged by
``glossary()``; docs/metrics.md is generated from it by ``python -m analyzer.metrics > docs/metrics.md``)
and the metric keys of ``Analysis.summary`` (``summary_metrics``). It reads DataFrames with the columns of
``analyzer.tables`` and returns DataFrames or JSON-safe dicts. It performs no I/O and reads no clock; it
knows nothing of packets, TCP reassembly or HTTP parsing, nor of how results are presented. Between its
steps it hands the C heap's free pages back to the system (``analyzer.heap``; no I/O).

Modules: ``reuse`` (requests per connection, reuse ratio, avoidable connections), ``reasons`` (why each new
connection was opened, and the biggest reason), ``idle`` (idle gaps,
server idle-timeout inference), ``handshake`` (handshake overhead), ``hosts`` (the per-host table),
``pools`` (connections open at once per client and host),
``warmth`` (cold, warm and cooled responses: flights per round, transfer times, the bytes-in-flight
series), ``tcphealth`` (retransmissions by kind, window signals, RTTs per host), ``protocols`` (protocol
mix, TLS resumption, HTTP/2 streams per connection), ``whatif`` (the keep-alive what-if: the requests
replayed against other server idle timeouts and max-requests limits), ``closerace`` (requests caught by the
server's close of a keep-alive connection, and the client's retry).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import pandas as pd

from analyzer.heap import release_free_memory
from analyzer.metrics import (
    closerace,
    handshake,
    hosts,
    idle,
    pools,
    protocols,
    reasons,
    reuse,
    tcphealth,
    warmth,
    whatif,
)
from analyzer.metrics.closerace import close_race_stats, close_races
from analyzer.metrics.frames import equals
from analyzer.metrics.handshake import (
    handshake_costs,
    handshake_overhead,
    handshake_totals,
    transaction_costs,
)
from analyzer.metrics.hosts import connection_hosts, flag_avoidable, host_count, host_table, transaction_hosts
from analyzer.metrics.idle import (
    idle_after_last,
    idle_before_stats,
    infer_idle_timeouts,
    timeouts_for_summary,
)
from analyzer.metrics.pools import BROWSER_PER_HOST_LIMIT, connection_pools, pool_events, pool_peaks, pool_timeline
from analyzer.metrics.protocols import protocol_mix, protocol_stats, tls_by_host
from analyzer.metrics.reasons import new_connection_reasons, reason_stats, reason_table
from analyzer.metrics.reuse import (
    avoidable_connections,
    connection_requests,
    requests_per_connection_histogram,
    reuse_stats,
    transaction_reused,
)
from analyzer.metrics.tcphealth import tcp_health_table, tcp_health_totals
from analyzer.metrics.warmth import (
    flight_rounds,
    series_connections,
    size_bucket,
    warmth_stats,
    warmth_transfers,
)
from analyzer.metrics.whatif import keepalive_whatif, keepalive_whatif_top, whatif_for_summary, whatif_totals
from analyzer.tables import ANOMALY_COLUMNS, CONNECTION_COLUMNS, TRANSACTION_COLUMNS, empty_frame

if TYPE_CHECKING:
    from analyzer.analysis import Analysis

#: A function giving the analysis with (at least) the columns asked for, by table (``summary_metrics_read``,
#: ``compute_all_read``): an analysis held in memory, or its tables read back from a spill
Read = Callable[[Mapping[str, Sequence[str]]], "Analysis"]

#: What a caller of ``compute_all`` keeps of one metric table (``drawn``): the table as made, and the tables
#: made so far by name (``pool_steps``' cut reads ``pools``) → the rows kept, in new memory (``DataFrame.take``
#: or a boolean mask: a slice of Arrow strings holds the whole column's buffers)
Cut = Callable[[pd.DataFrame, Mapping[str, pd.DataFrame]], pd.DataFrame]

__all__ = [
    "BROWSER_PER_HOST_LIMIT",
    "KEPT_COLUMNS",
    "METRIC_TABLES",
    "SUMMARY_COLUMNS",
    "SUMMARY_GROUPS",
    "TABLE_COLUMNS",
    "Cut",
    "MetricTables",
    "Read",
    "SummaryTables",
    "avoidable_connections",
    "close_race_stats",
    "close_races",
    "compute_all",
    "compute_all_read",
    "connection_hosts",
    "connection_pools",
    "connection_requests",
    "flag_avoidable",
    "flight_rounds",
    "glossary",
    "glossary_markdown",
    "group_columns",
    "handshake_costs",
    "handshake_overhead",
    "handshake_totals",
    "host_count",
    "host_table",
    "idle_after_last",
    "idle_before_stats",
    "infer_idle_timeouts",
    "keepalive_whatif",
    "keepalive_whatif_top",
    "metric_key_names",
    "new_connection_reasons",
    "pool_peaks",
    "pool_timeline",
    "protocol_mix",
    "protocol_stats",
    "reason_stats",
    "reason_table",
    "requests_per_connection_histogram",
    "reuse_stats",
    "series_connections",
    "size_bucket",
    "summary_metrics",
    "summary_metrics_read",
    "summary_tables",
    "summary_tables_read",
    "tcp_health_table",
    "tcp_health_totals",
    "tls_by_host",
    "transaction_costs",
    "transaction_hosts",
    "transaction_reused",
    "warmth_stats",
    "warmth_transfers",
    "whatif_for_summary",
    "whatif_totals",
]

_MODULES = (reuse, reasons, idle, handshake, hosts, pools, warmth, tcphealth, protocols, whatif, closerace)


def glossary() -> dict[str, str]:
    """Every metric's definition, metric name → one paragraph, in reading order (reuse, idle, handshake,
    hosts, warmth, tcphealth). A name defined twice is a programming error and raises ``ValueError``."""
    merged: dict[str, str] = {}
    for module in _MODULES:
        for name, text in module.DEFINITIONS.items():
            if name in merged:
                raise ValueError(f"metric {name!r} defined twice")
            merged[name] = text
    return merged


def glossary_markdown() -> str:
    """The glossary as the Markdown of docs/metrics.md (regenerate: ``python -m analyzer.metrics``)."""
    lines = [
        "# Metrics glossary",
        "",
        "<!-- Generated from analyzer.metrics.glossary(): edit the DEFINITIONS in analyzer/metrics/*.py,",
        "     then run `python -m analyzer.metrics > docs/metrics.md`. -->",
        "",
        "Every figure of the report and of `Analysis.summary` is defined here. Durations are milliseconds",
        "(`*_ms`) or seconds (`*_s`), as seen at the capture point.",
        "",
    ]
    for name, text in glossary().items():
        lines += [f"## `{name}`", "", text, ""]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class MetricTables:
    """Every metric of one analysis, each computed once (``compute_all``): the ``summary`` dict of
    ``summary_metrics`` and the tables the report draws."""

    summary: dict[str, Any]
    histogram: pd.DataFrame  # requests_per_connection_histogram
    avoidable: pd.DataFrame  # avoidable_connections
    idle_after: pd.DataFrame  # idle_after_last
    timeouts: pd.DataFrame  # infer_idle_timeouts (server side)
    costs: pd.DataFrame  # handshake_costs, per connection
    hosts: pd.DataFrame  # host_table
    conn_hosts: pd.DataFrame  # connection_hosts
    rounds: pd.DataFrame  # flight_rounds
    transfers: pd.DataFrame  # warmth_transfers
    health: pd.DataFrame  # tcp_health_table
    health_totals: pd.DataFrame  # tcp_health_totals
    protocols: pd.DataFrame  # protocol_mix
    tls_hosts: pd.DataFrame  # tls_by_host
    whatif: pd.DataFrame  # keepalive_whatif, per (client, server) pair and policy: the WHATIF_TOP_PAIRS pairs
    whatif_totals: pd.DataFrame  # whatif_totals, over every pair
    races: pd.DataFrame  # close_races
    pools: pd.DataFrame  # connection_pools
    pool_steps: pd.DataFrame  # pool_timeline
    reasons: pd.DataFrame  # new_connection_reasons, per connection
    reason_table: pd.DataFrame  # reason_table: the reasons counted, with evidence
    #: the rows each table had as made, before the caller's cuts (``compute_all``'s ``leave_out``, ``drawn``)
    rows: Mapping[str, int] = field(default_factory=dict)

    def without(self, *names: str) -> MetricTables:
        """These tables with those ``names`` left with their columns and no rows: their rows' memory is let
        go once nothing else holds them (``render_report``: each table once drawn)."""
        emptied: dict[str, Any] = {name: _no_rows(getattr(self, name)) for name in names}
        return replace(self, **emptied)


#: The names of ``MetricTables``' tables (every field but ``summary`` and ``rows``)
METRIC_TABLES: tuple[str, ...] = tuple(name for name in MetricTables.__dataclass_fields__
                                       if name not in ("summary", "rows"))


def compute_all(analysis: Analysis, *, with_whatif: bool = True, leave_out: Collection[str] = (),
                drawn: Mapping[str, Cut] | None = None) -> MetricTables:
    """All metrics of ``analysis`` with shared intermediate results (each computed once). Without
    ``with_whatif`` the keep-alive what-if (which replays every policy) is left empty: the summary does not
    need it.

    ``leave_out``: names of tables (``METRIC_TABLES``) the caller does not read; they are returned with their
    columns and no rows, each let go as soon as it is made (those the summary's figures are made from, before
    the other tables are made). The report draws neither ``reasons`` nor ``costs`` (one row per connection
    each; a million tiny connections: 250 MiB). ``drawn``: for some tables, the part the caller reads
    (``Cut``), kept instead of the whole as soon as the metrics are done with it (the report draws the first
    avoidable connections and pools; a million tiny connections: 98 MiB of avoidable connections, 67 of pool
    steps). ``MetricTables.rows`` counts each table's rows as made.

    Each step sees only the columns it is listed with (``SUMMARY_GROUPS``, ``TABLE_COLUMNS``): a metric
    that reads another raises ``KeyError`` (``compute_all_read`` reads just these back from a spill)."""
    return compute_all_read(partial(_only_columns, analysis), with_whatif=with_whatif, leave_out=leave_out,
                            drawn=drawn)


def compute_all_read(read: Read, *, with_whatif: bool = True, leave_out: Collection[str] = (),
                     drawn: Mapping[str, Cut] | None = None) -> MetricTables:
    """``compute_all`` of the analysis that ``read(columns)`` gives with (at least) those columns of its
    tables. Each step asks for its own columns just before it and lets them go after it
    (``SUMMARY_GROUPS``, then ``TABLE_COLUMNS`` table by table), so that the whole tables are never held:
    ``analyzer report`` reads them back from its spill step by step."""
    drawn = drawn or {}
    unknown = (set(leave_out) | set(drawn)) - set(METRIC_TABLES)
    if unknown:
        raise ValueError(f"not tables of MetricTables: {sorted(unknown)}")
    cuts = _Cuts({**drawn, **{name: _leave_out for name in leave_out}})
    summary, shared = _summary_and_shared(read, cuts=cuts)
    conn_hosts, setup_costs = shared["conn_hosts"], shared.pop("setup_costs")
    made = {name: cuts.cut(name, shared[name], shared)
            for name in ("avoidable", "timeouts", "costs", "hosts", "conn_hosts", "races", "pool_steps", "pools",
                         "reasons", "reason_table")}
    del shared  # the tables left out are let go here, before the others are made
    # the keep-alive what-if from its own columns and its connections' setup costs (the summary's group made
    # them), after the pools and before the other tables
    release_free_memory()
    whatif = _whatif(read(TABLE_COLUMNS["whatif"]), setup_costs) if with_whatif else _whatif(None, setup_costs)
    del setup_costs
    made["whatif"], made["whatif_totals"] = (cuts.cut(name, frame, made) for name, frame in
                                             zip(("whatif", "whatif_totals"), whatif, strict=True))
    del whatif
    later: dict[str, Callable[[Analysis], pd.DataFrame]] = {
        "histogram": lambda a: requests_per_connection_histogram(a.connections, a.transactions),
        "idle_after": lambda a: idle_after_last(a.connections, a.transactions),
        "rounds": lambda a: flight_rounds(a.transactions, a.flights),
        "transfers": lambda a: warmth_transfers(a.connections, a.transactions, conn_hosts=conn_hosts),
        "health": lambda a: tcp_health_table(a.connections, a.transactions, conn_hosts=conn_hosts),
        "health_totals": lambda a: tcp_health_totals(a.connections),
        "protocols": lambda a: protocol_mix(a.connections, a.transactions),
        "tls_hosts": lambda a: tls_by_host(a.connections, conn_hosts),
    }
    for name, make in later.items():  # one after the other, each one's columns and garbage let go before the next
        release_free_memory()
        made[name] = cuts.cut(name, make(read(TABLE_COLUMNS[name])), made)
    release_free_memory()
    return MetricTables(summary=summary, **made, rows=dict(cuts.rows))


@dataclass(slots=True)
class _Cuts:
    """The caller's cuts of ``compute_all``'s tables (``leave_out``, ``drawn``), each made once, and the rows
    of every table as made (``MetricTables.rows``)."""

    how: Mapping[str, Cut]
    rows: dict[str, int] = field(default_factory=dict)

    def cut(self, name: str, frame: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """``frame`` (table ``name``) as the caller keeps it; a table already cut comes back as it is."""
        if name in self.rows:
            return frame
        self.rows[name] = len(frame)
        how = self.how.get(name)
        return how(frame, tables) if how is not None else frame


def _leave_out(frame: pd.DataFrame, _tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The cut of a table left out (``compute_all``'s ``leave_out``): its columns without rows."""
    return _no_rows(frame)


def _whatif(analysis: Analysis | None, setup_costs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The keep-alive what-if of ``analysis`` (``keepalive_whatif_top``: its top pairs and its totals), with
    ``setup_costs`` (``handshake_costs``' ``setup_ms`` and ``setup_round_trips``, a row per connection in
    table order); its two tables without rows for None."""
    if analysis is None:
        return keepalive_whatif_top(empty_frame(CONNECTION_COLUMNS), empty_frame(TRANSACTION_COLUMNS))
    return keepalive_whatif_top(analysis.connections, analysis.transactions, costs=setup_costs)


def _no_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s columns and dtypes without its rows, holding none of their memory (a slice would)."""
    return frame.iloc[:0].copy()


def _summary_and_shared(read: Read, *, keep: bool = True,
                        cuts: _Cuts | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary's key figures, and the intermediate tables they were computed from (``compute_all``
    keeps them; ``summary_metrics`` drops them, and computes none of the report-only tables).

    ``read``: a function giving the analysis with (at least) the columns asked for. The figures
    are computed in groups (``SUMMARY_GROUPS``), each from its own columns read just before it and let
    go after it: on a million tiny connections all the columns weigh about 450 MiB, and the
    connection-lifecycle group (reasons, avoidable connections, close races, idle timeouts) does its work
    without a third of them (``analyzer export``'s metrics: peak 1,218 → 972 MiB; one reading back more:
    14.4 → 17.8 s); the pools, the last group, read three columns instead of the rest group's 32.

    Without ``keep`` the per-host table is not made (only its row count, ``host_count``), each
    intermediate table is let go as soon as the last figure that needs it is computed, and the returned
    dict is empty: on a million connections each weighs 100–300 MiB, and holding them all at once set the
    peak of ``analyzer export``. With ``keep``, the tables are cut as the caller asks (``cuts``: ``compute_all``'s
    ``leave_out`` and ``drawn``) after their last use here, and the per-transaction handshake costs are let go
    after theirs, so that the steps after it (the pools, ``compute_all``'s other tables) do not run on top of
    them (a million tiny connections: 226 MiB). The keep-alive what-if is one of those other tables: this
    keeps for it only its connections' setup costs (``setup_costs``), and for the per-host table only a flag
    per avoidable connection (``avoidable_flags``), both let go by the tables that read them.
    """
    def tables(group: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        analysis = read(group_columns(group, keep=keep))
        if any(name in analysis.spilled for name in SUMMARY_COLUMNS):
            raise ValueError("metrics of tables left on disk: read them back first (Analysis.held)")
        return analysis.connections, analysis.transactions

    shared: dict[str, Any] = {}
    figures: dict[str, Any] = {}  # the summary's figures, put in their documented order at the end

    def done(*names: str) -> None:
        """A step is over: without ``keep`` the tables named are let go; the heap's free pages go back."""
        if not keep:
            for name in names:
                shared.pop(name, None)
        release_free_memory()

    cuts = cuts if cuts is not None else _Cuts({})

    def spent(*names: str) -> None:
        """With ``keep``: the tables named have no later use here; each is cut as the caller asks."""
        if keep:
            for name in names:
                shared[name] = cuts.cut(name, shared[name], shared)
            release_free_memory()

    connections, transactions = tables("lifecycle")
    shared["avoidable"] = avoidable_connections(connections, transactions)
    figures["new_connections_avoidable"] = len(shared["avoidable"])
    shared["races"] = close_races(connections, transactions)
    figures["races"] = close_race_stats(shared["races"])
    shared["reasons"] = new_connection_reasons(connections, transactions, avoidable=shared["avoidable"],
                                               races=shared["races"])
    if keep:  # what the per-host table reads of them (by position: the rest group has the same rows), so that
        # they are cut before the rest group (a million tiny connections: 98 MiB)
        shared["avoidable_flags"] = flag_avoidable(connections, shared["avoidable"])
        spent("avoidable")
    done("avoidable", "races")
    shared["timeouts"] = infer_idle_timeouts(connections, transactions)
    figures["timeouts"] = timeouts_for_summary(shared["timeouts"])
    shared["reason_table"] = reason_table(shared["reasons"], shared["timeouts"])
    spent("reasons")
    done("reasons", "timeouts")
    figures["reason"] = reason_stats(shared["reason_table"])
    done("reason_table")
    del connections, transactions

    connections, transactions = tables("rest")
    shared["costs"] = handshake_costs(connections)
    if keep:  # what the keep-alive what-if reads of them, in memory of its own (compute_all_read)
        shared["setup_costs"] = pd.DataFrame({name: shared["costs"][name].to_numpy(dtype=float, copy=True)
                                              for name in ("setup_ms", "setup_round_trips")})
    shared["per_transaction"] = transaction_costs(connections, transactions, shared["costs"])
    figures["handshake"] = handshake_totals(connections, transactions, costs=shared["costs"],
                                            per_transaction=shared["per_transaction"])
    done("per_transaction")
    figures["reuse"] = reuse_stats(connections, transactions)
    figures["idle"] = idle_before_stats(transactions)
    shared["conn_hosts"] = conn_hosts = connection_hosts(connections, transactions)
    if keep:
        shared["hosts"] = host_table(connections, transactions, costs=shared["costs"],
                                     per_transaction=shared["per_transaction"],
                                     avoidable_flags=shared.pop("avoidable_flags"), timeouts=shared["timeouts"],
                                     conn_hosts=conn_hosts)
        figures["hosts"] = len(shared["hosts"])
        del shared["per_transaction"]  # its last use
        spent("timeouts", "costs")
    else:
        figures["hosts"] = host_count(connections, transactions, conn_hosts)
    done("costs")
    close_by = connections["close_by"]
    figures["closes"] = {
        "closes_by_server": int(equals(close_by, "server").sum()),
        "closes_by_client": int(equals(close_by, "client").sum()),
        "closes_unknown": int(equals(close_by, "unknown").sum()),
        "connections_open_at_end": int(equals(close_by, "open").sum()),
    }
    figures["warmth"] = warmth_stats(transactions)
    figures["protocols"] = protocol_stats(connections, transactions)
    del connections, transactions, close_by
    done()

    # the pools from their own three columns, once the rest's are let go (a million tiny connections: those
    # weighed 370 MiB, held under the pools' events before)
    connections, _ = tables("pools")
    if keep:
        # the pools' events made once for the pools and their steps, and let go after them (a million tiny
        # connections: 165 MiB of events, 67 of steps)
        events = pool_events(connections, conn_hosts["host"]) if len(connections) else None
        shared["pools"] = pool_rows = connection_pools(connections, conn_hosts["host"], events=events)
        shared["pool_steps"] = pool_timeline(connections, conn_hosts["host"], events=events)
        del events
        figures["max_parallel_connections"] = int(pool_rows["max_parallel"].max()) if len(pool_rows) else 0
        figures["pools_over_browser_limit"] = int((pool_rows["max_parallel"] > BROWSER_PER_HOST_LIMIT).sum()) \
            if len(pool_rows) else 0
        del pool_rows
        spent("pool_steps", "pools")  # the steps' cut may read every pool: before the pools are cut
    else:  # the two figures only, without the pools' names or table
        figures["max_parallel_connections"], figures["pools_over_browser_limit"] = \
            pool_peaks(connections, conn_hosts["host"]) if len(connections) else (0, 0)
    del conn_hosts, connections
    done("conn_hosts")
    summary: dict[str, Any] = {
        **figures["reuse"],
        "new_connections_avoidable": figures["new_connections_avoidable"],
        **figures["idle"],
        **figures["closes"],
        **figures["handshake"],
        "inferred_server_idle_timeouts": figures["timeouts"],
        "hosts": figures["hosts"],
        **figures["races"],
        **figures["reason"],
        "max_parallel_connections": figures["max_parallel_connections"],
        "pools_over_browser_limit": figures["pools_over_browser_limit"],
        **figures["warmth"],
        **figures["protocols"],
    }
    shared.pop("per_transaction", None)  # not one of compute_all's tables
    return summary, shared


#: The columns the summary's figures are computed from, by table (``summary_metrics`` and
#: ``summary_tables`` read no others). A caller may hand them tables of these columns only:
#: ``analyzer.pipeline`` and ``analyzer summary`` read just these back from a spill (a million connections:
#: about half the tables' memory). Some are read only when present
#: (``tls_round_trips``, ``response_complete``, ``estimated``). A metric that needs another column adds it
#: here, or raises ``KeyError`` in every test (``summary_metrics`` and ``summary_tables`` keep only these).
SUMMARY_COLUMNS: dict[str, tuple[str, ...]] = {
    "connections": (
        "uid", "client_ip", "server_ip", "server_port", "transport", "protocol", "tls", "tls_version", "sni",
        "tls_resumed", "tls_round_trips", "tls_decrypted", "syn_seen", "ts_start", "ts_end", "handshake_rtt_ms",
        "tls_handshake_ms", "requests", "max_concurrent_streams", "h2_goaway_by", "idle_after_last_ms",
        "close_by", "close_reason", "keep_alive_timeout_s", "keep_alive_max",
    ),
    "transactions": (
        "uid", "trans_depth", "method", "host", "target", "http_version", "response_version", "status",
        "ts_request_start", "ts_response_start", "ts_response_end", "idle_before_ms", "reused", "keep_alive",
        "request_connection", "response_connection", "response_complete", "server_ip", "server_port",
        "estimated", "warmth", "rounds", "ttfb_ms", "transfer_ms",
    ),
}

#: The columns of each group of the summary's figures (``_summary_and_shared``: one group after the other,
#: each from its own columns): ``lifecycle`` (avoidable connections, close races, new-connection reasons,
#: server idle timeouts), ``rest`` (handshakes, reuse, idle gaps, hosts, closes, warmth, protocols, and the
#: hosts of the connections the pools are made with) and ``pools`` (connections open at once per client and
#: host). Each is a subset of ``SUMMARY_COLUMNS`` (``tests/test_metrics.py`` checks it, and that the figures
#: are those of all the columns at once); a table a group does not name comes as its rows only.
SUMMARY_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "lifecycle": {
        "connections": (
            "uid", "client_ip", "server_ip", "server_port", "syn_seen", "ts_start", "ts_end", "handshake_rtt_ms",
            "requests", "h2_goaway_by", "idle_after_last_ms", "close_by", "close_reason", "keep_alive_timeout_s",
            "keep_alive_max",
        ),
        "transactions": (
            "uid", "trans_depth", "method", "target", "http_version", "response_version", "status",
            "ts_request_start", "ts_response_start", "ts_response_end", "keep_alive", "request_connection",
            "response_connection", "response_complete", "estimated",
        ),
    },
    "rest": {
        "connections": (
            "uid", "client_ip", "server_ip", "server_port", "transport", "protocol", "tls", "tls_version", "sni",
            "tls_resumed", "tls_round_trips", "tls_decrypted", "syn_seen", "ts_start", "ts_end", "handshake_rtt_ms",
            "tls_handshake_ms", "requests", "max_concurrent_streams", "close_by",
        ),
        "transactions": (
            "uid", "trans_depth", "host", "idle_before_ms", "reused", "server_ip", "server_port", "estimated",
            "warmth", "rounds", "ttfb_ms", "transfer_ms",
        ),
    },
    "pools": {"connections": ("client_ip", "ts_start", "ts_end")},
}


#: The columns the tables ``compute_all`` keeps from the summary's steps read beyond their group's
#: (``_summary_and_shared`` with ``keep``: the per-host table's HTTP versions), by group.
KEPT_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "rest": {"transactions": ("http_version",)},
}

def group_columns(group: str, *, keep: bool) -> dict[str, tuple[str, ...]]:
    """The columns one group of the summary's figures asks for (``SUMMARY_GROUPS``), with those of the
    tables kept beside them (``KEPT_COLUMNS``) when ``keep`` (``compute_all``)."""
    extra = KEPT_COLUMNS.get(group, {}) if keep else {}
    return {name: (*names, *extra.get(name, ())) for name, names in SUMMARY_GROUPS[group].items()}


#: The columns each table of ``compute_all`` after the summary's (``_summary_and_shared``) is computed from,
#: by table of ``Analysis`` (``whatif`` gives ``whatif_totals`` too). ``compute_all`` hands each step these
#: only (``tests/test_metrics.py`` checks that its tables are those of every column), and
#: ``compute_all_read`` reads back just these for the step.
#: ``health``, ``transfers`` and ``tls_hosts`` line up ``conn_hosts`` with the connections by position; a
#: transaction without a known connection is put under its own server and Host header (``transfers``).
_HEALTH_COLUMNS = (
    "handshake_rtt_ms", "client_packets", "server_packets", "retransmissions", "fast_retransmissions",
    "spurious_retransmissions", "out_of_order", "dup_acks", "zero_window", "window_full", "keep_alives",
    "rtt_min_ms", "rtt_median_ms", "rtt_samples", "capture_point",
)
TABLE_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "whatif": {  # and whatif_totals (the setup costs of its connections come from the summary's rest group)
        "connections": ("uid", "client_ip", "server_ip", "server_port", "ts_start", "ts_end", "close_by"),
        "transactions": ("uid", "trans_depth", "http_version", "status", "ts_request_start", "ts_response_start",
                         "ts_response_end", "idle_before_ms", "keep_alive", "request_connection",
                         "response_connection"),
    },
    "histogram": {"connections": ("uid", "tls", "tls_decrypted", "requests"), "transactions": ("uid",)},
    "idle_after": {
        "connections": ("uid", "server_ip", "server_port", "idle_after_last_ms", "close_by", "close_reason"),
        "transactions": ("uid", "trans_depth", "ts_request_start", "keep_alive"),
    },
    "rounds": {"transactions": ("uid", "trans_depth", "response_body_bytes"),
               "flights": ("uid", "trans_depth", "warmth", "round", "bytes")},
    "transfers": {"connections": (), "transactions": ("uid", "host", "response_body_bytes", "warmth", "rounds",
                                                      "ttfb_ms", "transfer_ms", "server_ip", "server_port")},
    "health": {"connections": _HEALTH_COLUMNS, "transactions": ()},
    "health_totals": {"connections": _HEALTH_COLUMNS},
    "protocols": {"connections": ("uid", "protocol"), "transactions": ("uid", "estimated")},
    "tls_hosts": {"connections": ("tls", "tls_version", "tls_resumed", "tls_handshake_ms")},
}


def summary_metrics(analysis: Analysis) -> dict[str, Any]:
    """The key figures of ``analysis`` as a flat, JSON-serialisable dict (ints, floats, str, None, and
    one list of dicts), for the pipeline to merge into ``Analysis.summary``.

    Keys (definitions in ``glossary()``):
      from ``reuse_stats``: connections, connections_counted, connections_http, connections_unused,
        connections_single_request, connections_reused, transactions, transactions_reused, reuse_ratio,
        requests_per_connection_mean, requests_per_connection_median, requests_per_connection_max;
      new_connections_avoidable (count of ``avoidable_connections``);
      from ``reason_stats``: new_connections, new_connection_reasons, top_reuse_blocker,
        top_reuse_blocker_connections, top_reuse_blocker_share, top_reuse_blocker_evidence;
      from ``idle_before_stats``: idle_gaps, idle_gaps_pipelined, idle_before_ms_median,
        idle_before_ms_p90, idle_before_ms_max;
      closes_by_server, closes_by_client, closes_unknown, connections_open_at_end (by ``close_by``);
      from ``handshake_totals``: handshake_connections_measured, handshake_connections_imputed,
        handshake_connections_excluded, handshake_rtt_ms_median, handshake_time_ms_total,
        tls_handshake_time_ms_total, handshake_round_trips_paid, handshake_time_ms_saved,
        handshake_round_trips_saved, handshake_time_ms_one_per_request,
        handshake_round_trips_one_per_request;
      inferred_server_idle_timeouts: list of {server, timeout_s, samples, outliers, immediate_closes,
        min_s, max_s, spread_s, advertised_timeout_s} for servers with at least one sample, most samples
        first;
      hosts (number of rows of ``host_table``);
      max_parallel_connections, pools_over_browser_limit (as ``connection_pools`` gives them: ``pool_peaks``);
      from ``close_race_stats``: close_races, close_races_retried, close_race_retry_ms_median;
      from ``warmth_stats``: responses_cold, responses_warm, responses_cooled, responses_warmth_unknown,
        ttfb_ms_median_W, transfer_ms_median_W, rounds_median_W for W in cold, warm, cooled;
      from ``protocol_stats``: protocols, transactions_estimated, tls_connections, tls_resumed, tls_decrypted,
        tls_resumption_ratio, tls_versions, h2_connections, h2_requests_per_connection_mean,
        h2_requests_per_connection_max, h2_max_concurrent_streams.
    """
    return summary_metrics_read(partial(_only_columns, analysis))


def summary_metrics_read(read: Read) -> dict[str, Any]:
    """``summary_metrics`` of the analysis that ``read(columns)`` gives with those columns of its
    connections and transactions (``SUMMARY_GROUPS``: each group of figures asks for its own, and lets
    them go before the next group asks): ``analyzer.pipeline`` reads them back from a spill."""
    return _summary_and_shared(read, keep=False)[0]


@dataclass(frozen=True, slots=True)
class SummaryTables:
    """What ``analyzer summary`` shows (``summary_tables``): the summary's figures and three tables."""

    summary: dict[str, Any]  # summary_metrics
    hosts: pd.DataFrame  # host_table
    protocols: pd.DataFrame  # protocol_mix
    timeouts: pd.DataFrame  # infer_idle_timeouts


def summary_tables(analysis: Analysis, known: Mapping[str, Any] | None = None) -> SummaryTables:
    """The summary's figures (``summary_metrics``) and the per-host, protocol-mix and server idle-timeout
    tables, from the ``SUMMARY_COLUMNS`` only (``summary_tables_read``): the terminal summary without
    ``compute_all``'s report tables.

    ``known``: a summary that already holds the figures (every key of ``metric_key_names``: what
    ``analyzer.analyze`` gives in ``Analysis.summary``); they are taken from it instead of computed again
    (``analyzer summary`` on a million connections: 7-14 s)."""
    return summary_tables_read(partial(_only_columns, _summary_columns(analysis)), known=known)


def summary_tables_read(read: Read, known: Mapping[str, Any] | None = None) -> SummaryTables:
    """``summary_tables`` of the analysis that ``read(columns)`` gives with those columns of its connections
    and transactions: ``analyzer summary`` reads them back from its spill a group at a time, as the report
    does (``compute_all_read``). The idle timeouts and the avoidable connections (a flag per connection,
    all the per-host table reads of them) come from the connection-lifecycle group's columns, the per-host
    table from the rest group's (``SUMMARY_GROUPS``), the protocol mix from its own (``TABLE_COLUMNS``); each
    group's columns are let go before the next is read. On a million tiny connections the command's peak
    was the per-host table made on top of every summary column at once (1,276 MiB)."""
    names = metric_key_names()
    summary = {name: known[name] for name in names} if known is not None and all(n in known for n in names) \
        else summary_metrics_read(read)
    lifecycle = read(group_columns("lifecycle", keep=True))
    timeouts = infer_idle_timeouts(lifecycle.connections, lifecycle.transactions)
    avoidable_flags = flag_avoidable(lifecycle.connections,
                                     avoidable_connections(lifecycle.connections, lifecycle.transactions))
    del lifecycle
    release_free_memory()
    rest = read(group_columns("rest", keep=True))
    hosts = host_table(rest.connections, rest.transactions, timeouts=timeouts, avoidable_flags=avoidable_flags)
    del rest, avoidable_flags
    release_free_memory()
    mix = read(TABLE_COLUMNS["protocols"])
    return SummaryTables(summary=summary, hosts=hosts, protocols=protocol_mix(mix.connections, mix.transactions),
                         timeouts=timeouts)


@cache
def metric_key_names() -> tuple[str, ...]:
    """The keys of ``summary_metrics``, in its order (the same for every analysis: those of empty tables)."""
    from analyzer.analysis import Analysis  # this module names it for type checking only

    empty = Analysis(empty_frame(CONNECTION_COLUMNS), empty_frame(TRANSACTION_COLUMNS), empty_frame(ANOMALY_COLUMNS),
                     {})
    return tuple(summary_metrics(empty))


def _summary_columns(analysis: Analysis) -> Analysis:
    """``analysis`` with only the ``SUMMARY_COLUMNS`` of its connections and transactions."""
    return _only_columns(analysis, SUMMARY_COLUMNS)


def _only_columns(analysis: Analysis, columns: Mapping[str, Sequence[str]]) -> Analysis:
    """``analysis`` with only the ``columns`` of each table named there (a metric that reads another
    raises ``KeyError``); the tables not named are left as they are."""
    only: dict[str, Any] = {name: _only(getattr(analysis, name), names) for name, names in columns.items()}
    return replace(analysis, **only)


def _only(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with only those of ``columns`` it has, in its order (no copy: pandas copies on write)."""
    return frame[[c for c in frame.columns if c in columns]]
