"""Rendering of the DDL files in ``ddl/`` for one store: embedded, single server or cluster.

One set of files serves every deployment; what changes is the ``ON CLUSTER`` clause,
the engine (``Replicated…`` on a cluster) and the TTL clause.

Beside the contrib exporter's spans table and trace-id lookup, the GenAI tables: a typed row
per GenAI call (``<table>_genai``) and per-minute roll-ups of them (``<table>_genai_1m``),
each fed by a materialized view, so they fill whoever writes the spans table.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from string import Template

_DDL = files("lqo.collector.exporters.clickhouse") / "ddl"


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
            genai_view=quote_ident(self.genai_view),
            rollup_table=quote_ident(self.rollup_table),
            rollup_view=quote_ident(self.rollup_view),
            on_cluster=on_cluster,
            **values,
        )
        body = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
        return body.strip()

    def statements(self) -> list[str]:
        """DDL in execution order: database, spans table, lookup table and its view, then (with
        ``genai``) the GenAI table, the roll-up table, the roll-up's view and last the GenAI
        table's view, so that no view ever writes into a table not yet there."""
        return [
            self._render("database.sql"),
            self._render(
                "traces_table.sql",
                engine=self._engine("MergeTree"),
                ttl=ttl_expr(self.ttl_seconds, "toDateTime(Timestamp)"),
            ),
            self._render(
                "traces_id_ts_table.sql",
                engine=self._engine("AggregatingMergeTree"),
                ttl=ttl_expr(self.ttl_seconds, "toDateTime(Start)"),
            ),
            self._render("traces_id_ts_mv.sql"),
            *(self.genai_statements() if self.genai else []),
        ]

    def genai_select(self, also: str = "") -> str:
        """The GenAI calls among the spans as the GenAI table's columns (ddl/genai_select.sql);
        ``also``: a further condition on the spans."""
        return self._render("genai_select.sql", also=f"\n      AND {also}" if also else "")

    def genai_statements(self) -> list[str]:
        return [
            self._render(
                "genai_table.sql",
                engine=self._engine("MergeTree"),
                ttl=ttl_expr(self.ttl_seconds, "toDateTime(Timestamp)"),
            ),
            self._render(
                "rollup_table.sql",
                engine=self._engine("AggregatingMergeTree"),
                ttl=ttl_expr(self.rollup_ttl_seconds, "Minute"),
            ),
            self._render("rollup_view.sql"),
            self._render("genai_view.sql", select=self.genai_select()),
        ]

    def backfill_statement(self) -> str:
        """Copies the GenAI spans stored before the GenAI table's view existed into the GenAI
        table (the roll-up's view folds them in). Spans already there (the view's, or an earlier
        run's) are left out by SpanId, so it can run while spans arrive, and run again."""
        genai = f"{quote_ident(self.database)}.{quote_ident(self.genai_table)}"
        return f"INSERT INTO {genai}\n{self.genai_select(f'SpanId NOT IN (SELECT SpanId FROM {genai})')}"

    def tables(self) -> list[str]:
        """The tables and views these statements make, by name."""
        names = [self.table, self.lookup_table, self.view]
        if self.genai:
            names += [self.genai_table, self.rollup_table, self.rollup_view, self.genai_view]
        return names

    @property
    def qualified_table(self) -> str:
        return f"{quote_ident(self.database)}.{quote_ident(self.table)}"
