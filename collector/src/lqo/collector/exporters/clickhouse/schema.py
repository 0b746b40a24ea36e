"""Rendering of the DDL files in ``ddl/`` for one store: embedded, single server or cluster.

One set of files serves every deployment; what changes is the ``ON CLUSTER`` clause,
the engine (``Replicated…`` on a cluster) and the TTL clause.

Beside the contrib exporter's spans table and trace-id lookup, the GenAI tables: a typed row
per GenAI call (``<table>_genai``) and per-minute roll-ups of them (``<table>_genai_1m``),
each fed by a materialized view, so they fill whoever writes the spans table; and the
evaluation results producers send as log records (``<table>_genai_evaluations``), which the
collector writes itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from string import Template

_DDL = files("lqo.collector.exporters.clickhouse") / "ddl"


# Inserts whose tokens (insert_deduplication_token) a non-replicated table remembers, so that rows
# sent again are stored once: the span exporter and the evaluations writer each send about one
# insert a second, so this covers minutes; a batch sent again is the first a restart sends.
DEDUP_WINDOW = 1000


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def ttl_expr(ttl_seconds: float, time_field: str) -> str:
    """The contrib exporter's TTL clause: the largest whole unit that divides the TTL."""
    seconds = int(ttl_seconds)
    if seconds <= 0:
        return ""
    for unit, size in (("Day", 86400), ("Hour", 3600), ("Minute", 60)):
        if seconds % size == 0:
            return f"TTL {time_field} + toInterval{unit}({seconds // size})"
    return f"TTL {time_field} + toIntervalSecond({seconds})"


@dataclass(frozen=True)
class SchemaSpec:
    database: str = "default"
    table: str = "otel_traces"
    ttl_seconds: float = 0.0
    cluster_name: str = ""
    genai: bool = True
    rollup_ttl_seconds: float = 0.0

    @property
    def lookup_table(self) -> str:
        return f"{self.table}_trace_id_ts"

    @property
    def view(self) -> str:
        return f"{self.table}_trace_id_ts_mv"

    @property
    def genai_table(self) -> str:
        return f"{self.table}_genai"

    @property
    def genai_view(self) -> str:
        return f"{self.table}_genai_mv"

    @property
    def rollup_table(self) -> str:
        return f"{self.table}_genai_1m"

    @property
    def rollup_view(self) -> str:
        return f"{self.table}_genai_1m_mv"

    @property
    def evaluations_table(self) -> str:
        return f"{self.table}_genai_evaluations"

    def _engine(self, family: str) -> str:
        return f"Replicated{family}()" if self.cluster_name else f"{family}()"

    def _render(self, name: str, **values: str) -> str:
        template = Template((_DDL / name).read_text(encoding="utf-8"))
        on_cluster = f"ON CLUSTER {quote_ident(self.cluster_name)}" if self.cluster_name else ""
        sql = template.substitute(
            database=quote_ident(self.database),
            table=quote_ident(self.table),
            lookup_table=quote_ident(self.lookup_table),
            view=quote_ident(self.view),
            genai_table=quote_ident(self.genai_table),
            rollup_table=quote_ident(self.rollup_table),
            evaluations_table=quote_ident(self.evaluations_table),
            on_cluster=on_cluster,
            **values,
        )
        body = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
        return body.strip()

    def statements(self) -> list[str]:
        """DDL in execution order: database, spans table, lookup table and its view, then (with
        ``genai``) the GenAI table, the roll-up table, the roll-up's view and last the GenAI
        table's view, so that no view ever writes into a table not yet there."""
        return self.base_statements() + (self.genai_statements() if self.genai else [])

    def base_statements(self) -> list[str]:
        """The contrib exporter's: database, spans table, lookup table and its view."""
        return [
            self._render("database.sql"),
            self._render(
                "traces_table.sql",
                engine=self._engine("MergeTree"),
                ttl=ttl_expr(self.ttl_seconds, "toDateTime(Timestamp)"),
                dedup_window=str(DEDUP_WINDOW),
            ),
            self._render(
                "traces_id_ts_table.sql",
                engine=self._engine("AggregatingMergeTree"),
                ttl=ttl_expr(self.ttl_seconds, "toDateTime(Start)"),
                dedup_window=str(DEDUP_WINDOW),
            ),
            self._render("traces_id_ts_mv.sql"),
        ]

    def genai_select(self, also: str = "") -> str:
        """The GenAI calls among the spans as the GenAI table's columns (ddl/genai_select.sql);
        ``also``: a further condition on the spans."""
        return self._render("genai_select.sql", also=f"\n      AND {also}" if also else "")

    def rollup_select(self) -> str:
        """The roll-ups of the GenAI calls an insert brings (ddl/rollup_select.sql)."""
        return self._render("rollup_select.sql")

    def _genai_tables(self) -> dict[str, str]:
        """The GenAI tables' CREATE statements by name."""
        return {
            self.genai_table: self._render(
                "genai_table.sql",
                engine=self._engine("MergeTree"),
                ttl=ttl_expr(self.ttl_seconds, "toDateTime(Timestamp)"),
                dedup_window=str(DEDUP_WINDOW),
            ),
            self.rollup_table: self._render(
                "rollup_table.sql",
                engine=self._engine("AggregatingMergeTree"),
                ttl=ttl_expr(self.rollup_ttl_seconds, "Minute"),
                dedup_window=str(DEDUP_WINDOW),
            ),
            self.evaluations_table: self._render(
                "evaluations_table.sql",
                engine=self._engine("MergeTree"),
                ttl=ttl_expr(self.ttl_seconds, "toDateTime(Timestamp)"),
                dedup_window=str(DEDUP_WINDOW),
            ),
        }

    def genai_views(self) -> list[tuple[str, str, str]]:
        """(view, the table it feeds, its SELECT), in creation order: the roll-ups' view before
        the calls table's, so that no view writes into a table whose view is not there yet."""
        return [(self.rollup_view, self.rollup_table, self.rollup_select()),
                (self.genai_view, self.genai_table, self.genai_select())]

    def genai_statements(self) -> list[str]:
        return self.genai_table_statements() + self.genai_view_statements()

    def genai_table_statements(self) -> list[str]:
        return list(self._genai_tables().values())

    def genai_view_statements(self) -> list[str]:
        return [self._render("view.sql", mv=quote_ident(view), mv_target=quote_ident(target), select=select)
                for view, target, select in self.genai_views()]

    def columns(self, table: str) -> list[tuple[str, str]]:
        """A GenAI table's columns as its DDL declares them: (name, type and codec)."""
        ddl = self._genai_tables()[table]
        body = ddl[ddl.index("(") + 1:ddl.rindex(") ENGINE")]
        return [(line.split(None, 1)[0], line.split(None, 1)[1].rstrip(","))
                for line in (raw.strip() for raw in body.splitlines())
                if line and not line.startswith("INDEX ")]

    def add_columns_statement(self, table: str, columns: list[tuple[str, str]]) -> str:
        """Adds ``columns`` to a GenAI table made by an older version."""
        on_cluster = f" ON CLUSTER {quote_ident(self.cluster_name)}" if self.cluster_name else ""
        adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {quote_ident(name)} {decl}" for name, decl in columns)
        return f"ALTER TABLE {quote_ident(self.database)}.{quote_ident(table)}{on_cluster} {adds}"

    @staticmethod
    def view_version(select: str) -> str:
        """The comment a GenAI view carries: which SELECT it runs."""
        return "lqo " + hashlib.sha256(select.encode()).hexdigest()[:16]

    def update_view_statements(self, view: str, select: str, query: bool = True) -> list[str]:
        """Brings a GenAI view to ``select`` (``query``) and marks it with its version."""
        name = f"{quote_ident(self.database)}.{quote_ident(view)}"
        on_cluster = f" ON CLUSTER {quote_ident(self.cluster_name)}" if self.cluster_name else ""
        return ([f"ALTER TABLE {name}{on_cluster} MODIFY QUERY {select}"] if query else []) + [
            self.comment_statement(view, self.view_version(select))]

    def token_tables(self) -> list[str]:
        """The tables that remember their last inserts' tokens: the spans table, and every table
        written with it (its views' targets) or by the collector with tokens (evaluations)."""
        return [self.table, self.lookup_table] + (
            [self.genai_table, self.rollup_table, self.evaluations_table] if self.genai else [])

    def dedup_window_statement(self, table: str) -> str:
        """A table of an older version remembers the tokens of its inserts too."""
        on_cluster = f" ON CLUSTER {quote_ident(self.cluster_name)}" if self.cluster_name else ""
        return (f"ALTER TABLE {quote_ident(self.database)}.{quote_ident(table)}{on_cluster} "
                f"MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}")

    def comment_statement(self, table: str, comment: str) -> str:
        name = f"{quote_ident(self.database)}.{quote_ident(table)}"
        on_cluster = f" ON CLUSTER {quote_ident(self.cluster_name)}" if self.cluster_name else ""
        return f"ALTER TABLE {name}{on_cluster} MODIFY COMMENT '{comment.replace(chr(39), '')}'"

    def backfill_statement(self, day: str | None = None) -> str:
        """Copies the GenAI spans stored before the GenAI table's view existed into the GenAI
        table (the roll-up's view folds them in); ``day`` ('YYYY-MM-DD', a partition of both
        tables): that day's only. Spans already there (the view's, or an earlier run's) are left
        out by SpanId, so it can run while spans arrive, and run again."""
        genai = f"{quote_ident(self.database)}.{quote_ident(self.genai_table)}"
        if day is None:
            return f"INSERT INTO {genai}\n{self.genai_select(f'SpanId NOT IN (SELECT SpanId FROM {genai})')}"
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise ValueError(f"not a day: {day!r}")
        on_day = f"toDate(Timestamp) = '{day}'"
        return (f"INSERT INTO {genai}\n"
                f"{self.genai_select(f'{on_day} AND SpanId NOT IN (SELECT SpanId FROM {genai} WHERE {on_day})')}")

    def stored_days_statement(self) -> str:
        """The days (partitions) the spans table holds, oldest first."""
        return (f"SELECT DISTINCT partition FROM system.parts WHERE database = '{self.database}' "
                f"AND table = '{self.table}' AND active ORDER BY partition")

    def tables(self) -> list[str]:
        """The tables and views these statements make, by name."""
        names = [self.table, self.lookup_table, self.view]
        if self.genai:
            names += [self.genai_table, self.rollup_table, self.evaluations_table, self.rollup_view,
                      self.genai_view]
        return names

    @property
    def qualified_table(self) -> str:
        return f"{quote_ident(self.database)}.{quote_ident(self.table)}"
