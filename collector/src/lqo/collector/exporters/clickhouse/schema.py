"""Rendering of the DDL files in ``ddl/`` for one store: embedded, single server or cluster.

One set of files serves every deployment; what changes is the ``ON CLUSTER`` clause,
the engine (``Replicated…`` on a cluster) and the TTL clause.
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

    @property
    def lookup_table(self) -> str:
        return f"{self.table}_trace_id_ts"

    @property
    def view(self) -> str:
        return f"{self.table}_trace_id_ts_mv"

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
            on_cluster=on_cluster,
            **values,
        )
        body = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
        return body.strip()

    def statements(self) -> list[str]:
        """DDL in execution order: database, spans table, lookup table, view."""
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
        ]

    @property
    def qualified_table(self) -> str:
        return f"{quote_ident(self.database)}.{quote_ident(self.table)}"
