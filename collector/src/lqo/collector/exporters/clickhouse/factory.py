"""The ``clickhouse`` exporter: spans → ``otel_traces`` on an embedded or remote store, and
from there (materialized views) → the GenAI tables: ``otel_traces_genai``, ``otel_traces_genai_1m``."""

from __future__ import annotations

import logging
import os
import re
import threading
import time

import pyarrow as pa
from pydantic import Field, SecretStr, field_validator

from lqo.collector.components import (
    ComponentContext,
    ExportResult,
    ExportStatus,
    Factory,
    register,
)
from lqo.collector.config import Duration, StrictModel
from lqo.collector.exporterhelper import BatchConfig, RetryConfig, SendingQueueConfig
from lqo.collector.exporters.clickhouse.backends import Backend, StoreError, open_backend
from lqo.collector.exporters.clickhouse.schema import SchemaSpec, quote_ident
from lqo.collector.model.spanbatch import SpanBatch

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The GenAI table's comment while the spans stored before it are being copied in.
BACKFILL_PENDING = "lqo backfill pending"
USERNAME_ENV = "LQO_CLICKHOUSE_USERNAME"
PASSWORD_ENV = "LQO_CLICKHOUSE_PASSWORD"


class ClickHouseExporterConfig(StrictModel):
    endpoint: str = "embedded://./.lqo/clickhouse"
    database: str = "default"
    traces_table_name: str = "otel_traces"
    username: str = Field("", description=f"default: ${USERNAME_ENV}, else 'default'")
    password: SecretStr = Field(SecretStr(""), description=f"default: ${PASSWORD_ENV}")
    ttl: Duration = 0.0
    genai_tables: bool = Field(
        True,
        description="also keep <table>_genai (a typed row per GenAI call) and <table>_genai_1m "
        "(per-minute roll-ups), filled from the spans by materialized views",
    )
    rollup_ttl: Duration = Field(
        0.0, description="how long the per-minute roll-ups are kept (0: for ever); may outlive ttl"
    )
    create_schema: bool = True
    cluster_name: str = ""
    timeout: Duration = 30.0
    compress: bool = True
    materialize_skip_indexes_on_insert: bool = Field(
        False,
        description="build the tables' skip indexes at insert (true) or when parts merge "
        "(false: ~4 us/span less CPU; fresh parts are scanned until their first merge)",
    )
    sending_queue: SendingQueueConfig = SendingQueueConfig()
    batch: BatchConfig = BatchConfig()
    retry_on_failure: RetryConfig = RetryConfig()

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value.startswith("embedded://"):
            if not value.removeprefix("embedded://"):
                raise ValueError("embedded:// needs a directory, e.g. embedded://./.lqo/clickhouse")
            return value
        if re.match(r"^https?://[^/:]+(:\d+)?/?$", value):
            return value
        raise ValueError(
            "use embedded://PATH for the built-in store, or http(s)://HOST:PORT for a server"
        )

    @field_validator("database", "traces_table_name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError("must be a plain identifier: letters, digits and '_'")
        return value

    def resolved_username(self) -> str:
        return self.username or os.environ.get(USERNAME_ENV, "")

    def resolved_password(self) -> str:
        return self.password.get_secret_value() or os.environ.get(PASSWORD_ENV, "")

    def schema(self) -> SchemaSpec:
        return SchemaSpec(self.database, self.traces_table_name, self.ttl, self.cluster_name,
                          self.genai_tables, self.rollup_ttl)


class ClickHouseExporter:
    def __init__(self, config: ClickHouseExporterConfig) -> None:
        self.config = config
        self.schema = config.schema()
        self.backend: Backend | None = None
        self._backfill_thread: threading.Thread | None = None
        self._closing = False
        self._insert_settings = {
            "materialize_skip_indexes_on_insert": int(config.materialize_skip_indexes_on_insert),
            # a view that cannot take a block (one a user added, say) must not lose the spans
            "materialized_views_ignore_errors": 1,
        }

    def start(self) -> None:
        c = self.config
        self.backend = open_backend(
            c.endpoint, c.resolved_username(), c.resolved_password(), c.timeout, c.compress
        )
        tables = self._present()  # the schema's tables and views in the store, with their comments and engines
        present = {name: comment for name, (comment, _) in tables.items()}
        missing = [name for name in self.schema.tables() if name not in present]
        if c.create_schema:
            spec = self.schema
            # a view's SELECT is checked against its table even when the view exists: the columns
            # an older version's tables lack are added before the views are seen to
            for statement in spec.base_statements() + (spec.genai_table_statements() if spec.genai else []):
                self.backend.execute(statement)
            self._remember_tokens(tables)
            updated = False
            if spec.genai:
                self._add_lacking_columns(missing)
                for statement in spec.genai_view_statements():
                    self.backend.execute(statement)
                updated = self._update_views(present)
            if c.endpoint.startswith("embedded://") and (updated or any(v in missing for v in self._views())):
                self._reload_views()
            if spec.genai and spec.genai_view in missing and spec.table not in missing:
                # views new to a store that holds spans already: copy those in, marked as pending
                # on the GenAI table until done, so that a stop midway resumes at the next start
                self.backend.execute(spec.comment_statement(spec.genai_table, BACKFILL_PENDING))
                self._backfill()
            elif spec.genai and present.get(spec.genai_table) == BACKFILL_PENDING:
                self._backfill()
        else:
            if missing:
                raise StoreError(
                    f"{', '.join(missing)} missing in database {self.schema.database!r} and "
                    "create_schema is false; create them with the DDL from `lqo schema --config "
                    "FILE`" + (", or set genai_tables: false" if self.schema.table not in missing
                               else "") + ", or set create_schema: true",
                    permanent=True,
                )
        log.info("clickhouse exporter writing to %s, table %s", self.backend.description,
                 self.schema.qualified_table)

    def _present(self) -> dict[str, tuple[str, str]]:
        """The schema's tables and views that are in the store → their comments and engines
        (``engine_full``, with its settings), in one query."""
        assert self.backend is not None
        sql = (
            "SELECT name, comment, engine_full FROM system.tables WHERE database = "
            f"'{self.schema.database}' AND name IN ({', '.join(repr(n) for n in self.schema.tables())})"
        )
        rows = self.backend.query(sql, "TSVRaw").decode().splitlines()
        # TSVRaw: "name\tcomment\tengine", even when empty
        return {name: (comment, engine) for name, comment, engine in (row.split("\t", 2) for row in rows if row)}

    def _add_lacking_columns(self, made_now: list[str]) -> None:
        """GenAI tables an older version made get the columns they lack (nothing is dropped or
        retyped; new skip indexes are not added)."""
        assert self.backend is not None
        spec = self.schema
        older = [t for t in (spec.genai_table, spec.rollup_table) if t not in made_now]
        if not older:
            return
        have: dict[str, set[str]] = {t: set() for t in older}
        rows = self.backend.query(
            f"SELECT table, name FROM system.columns WHERE database = '{spec.database}' "
            f"AND table IN ({', '.join(repr(t) for t in older)})", "TSVRaw").decode().splitlines()
        for table, name in (row.split("\t", 1) for row in rows if row):
            have[table].add(name)
        for table in older:
            lacking = [(name, decl) for name, decl in spec.columns(table) if name not in have[table]]
            if lacking:
                self.backend.execute(spec.add_columns_statement(table, lacking))
                log.info("added %s to %s", ", ".join(name for name, _ in lacking), table)

    def _remember_tokens(self, before: dict[str, tuple[str, str]]) -> None:
        """Tables an older version made (``before``: the tables there before the start, with
        their ``engine_full``) get the setting by which they remember their last inserts' tokens
        (a replicated one does by default): a batch sent again is stored once."""
        assert self.backend is not None
        spec = self.schema
        older = [t for t in spec.token_tables()
                 if t in before and "non_replicated_deduplication_window" not in before[t][1]]
        for table in older:
            self.backend.execute(spec.dedup_window_statement(table))
        if older:
            log.info("%s now store a batch sent twice once", ", ".join(older))

    def _update_views(self, before: dict[str, str]) -> bool:
        """A GenAI view whose comment names another SELECT (an older version's) runs this one's
        from now on (ALTER … MODIFY QUERY: rows already written stay as they are); a view just
        made only gets its comment. ``before``: the views there before the start, their comments.
        True if any view was altered."""
        assert self.backend is not None
        spec = self.schema
        altered = False
        for view, _target, select in spec.genai_views():
            if before.get(view) == spec.view_version(select):
                continue
            for statement in spec.update_view_statements(view, select, query=view in before):
                self.backend.execute(statement)
            altered = True
            if view in before:
                log.info("updated the view %s to this version's SELECT", view)
        return altered

    def _views(self) -> list[str]:
        spec = self.schema
        return [spec.view] + ([view for view, _, _ in spec.genai_views()] if spec.genai else [])

    def _reload_views(self) -> None:
        """The embedded engine's views as a restart loads them (DETACH, ATTACH). The engine
        names what a view writes for an insert (the blocks' deduplication ids, from the insert's
        token) from the view as it holds it; a view made or altered by this start, held as the
        statement left it, names the same rows otherwise than after a restart, and a batch sent
        again after a kill would then be stored twice by the views (tests/collector/
        test_stored_once.py). So after a start that made or altered one, the views are loaded
        again. The collector is the embedded store's only writer, and no insert runs yet:
        nothing passes a view while it is detached."""
        assert self.backend is not None
        for view in self._views():
            name = f"{quote_ident(self.schema.database)}.{quote_ident(view)}"
            self.backend.execute(f"DETACH TABLE {name}")
            self.backend.execute(f"ATTACH TABLE {name}")

    def _backfill(self) -> None:
        """Fills the GenAI tables, just made, from the GenAI spans already stored (a store kept
        from before they existed, or run with genai_tables: false): one day (partition) at a
        time, on a thread of its own, so that neither the start nor new spans wait for a big
        store, and no statement runs into the client's timeout. Progress is logged."""
        self._backfill_thread = threading.Thread(target=self._fill_days, name="lqo-genai-backfill", daemon=True)
        self._backfill_thread.start()

    def _fill_days(self) -> None:
        assert self.backend is not None
        spec, started = self.schema, time.monotonic()
        genai = f"{quote_ident(spec.database)}.{quote_ident(spec.genai_table)}"
        try:
            days = self.backend.query(spec.stored_days_statement(), "TSVRaw").decode().split()
        except StoreError as exc:
            log.warning("the GenAI tables start empty: listing the stored days failed (%s); the next "
                        "start tries again, or run what `lqo schema --backfill` prints", exc)
            return
        log.info("filling %s from the GenAI spans already stored: %d day(s), in the background",
                 spec.genai_table, len(days))
        failed: list[str] = []
        shown = time.monotonic()
        for done, day in enumerate(days, start=1):
            if self._closing:
                log.info("filling %s stopped at day %d of %d; the next start goes on", spec.genai_table, done, len(days))
                return
            try:
                self.backend.execute(spec.backfill_statement(day))
            except (StoreError, ValueError) as exc:
                if self._closing:
                    return
                failed.append(day)
                log.warning("filling %s: day %s failed (%s)", spec.genai_table, day, exc)
            if time.monotonic() - shown >= 10 and done < len(days):
                shown = time.monotonic()
                log.info("filling %s: %d of %d day(s) done", spec.genai_table, done, len(days))
        try:
            count = self.backend.query(f"SELECT count() FROM {genai}", "TSVRaw").decode().strip()
            if not failed:
                self.backend.execute(spec.comment_statement(spec.genai_table, ""))
        except StoreError as exc:
            log.warning("filling %s: could not finish (%s); the next start checks again", spec.genai_table, exc)
            return
        if failed:
            log.warning("filling %s: %d day(s) failed (%s); the next start tries them again", spec.genai_table,
                        len(failed), ", ".join(failed[:5]) + (" …" if len(failed) > 5 else ""))
        log.info("copied %s stored GenAI spans into %s in %.1f s", count, spec.genai_table,
                 time.monotonic() - started)

    def export(self, batch: SpanBatch) -> ExportResult:
        """Writes ``batch``; with its ``insert_token``, an insert of the same token again stores
        nothing (in the spans table and the tables its views fill)."""
        assert self.backend is not None, "export() before start()"
        settings = self._insert_settings
        if batch.insert_token:
            settings = {**settings, "insert_deduplicate": 1, "insert_deduplication_token": batch.insert_token}
        try:
            self.backend.insert_arrow(self.schema.database, self.schema.table, batch.table, settings)
        except StoreError as exc:
            if exc.too_large:
                return ExportResult(ExportStatus.TOO_LARGE, str(exc))
            status = ExportStatus.PERMANENT if exc.permanent else ExportStatus.RETRYABLE
            return ExportResult(status, str(exc))
        return ExportResult.ok()

    def insert_evaluations(self, table: pa.Table, token: str) -> None:
        """Evaluation results (``lqo.collector.evaluations``) into ``<table>_genai_evaluations``;
        ``token`` names the rows: an insert of the same token again stores nothing."""
        assert self.backend is not None, "insert_evaluations() before start()"
        self.backend.insert_arrow(self.schema.database, self.schema.evaluations_table, table,
                                  {**self._insert_settings, "insert_deduplicate": 1, "insert_deduplication_token": token})

    def shutdown(self) -> None:
        self._closing = True
        if self._backfill_thread is not None:
            self._backfill_thread.join(5)  # the day in progress: the store may finish it alone
        if self.backend is not None:
            self.backend.close()


def _create(config: ClickHouseExporterConfig, context: ComponentContext) -> ClickHouseExporter:
    return ClickHouseExporter(config)


FACTORY = register("exporters", Factory("clickhouse", ClickHouseExporterConfig, _create))
