"""Build a running collector from a validated config, and stop it cleanly."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client.exposition import choose_encoder
from pydantic import Field

from lqo.collector.components import ComponentContext, component_type, factories
from lqo.collector.config import ByteSize, ConfigError, Duration, StrictModel, validate_section
from lqo.collector.erase import build_erase_router
from lqo.collector.evaluate import build_evaluate_router
from lqo.collector.exporterhelper import (
    BatchConfig,
    QueuedExporter,
    RetryConfig,
    SendingQueueConfig,
)
from lqo.collector.exporters.clickhouse.backends import Backend
from lqo.collector.exporters.clickhouse.factory import ClickHouseExporter
from lqo.collector.exporters.clickhouse.schema import SchemaSpec
from lqo.collector.extensions.file_storage import resolve_storage
from lqo.collector.http_server import ThreadedServer, join_endpoint, split_endpoint
from lqo.collector.pipeline import NamedProcessor, Pipeline
from lqo.collector.query import build_query_router
from lqo.collector.receivers.ingest import RefusedRequests
from lqo.collector.receivers.otlp import AuthSettings, resolve_authenticator
from lqo.collector.receivers.otlp_http import RequireAuth
from lqo.collector.telemetry import SelfTelemetry
from lqo.collector.tls import ServerTLS, TLSServerSettings

log = logging.getLogger("lqo.collector")


class PipelineConfig(StrictModel):
    receivers: list[str] = Field(min_length=1)
    processors: list[str] = Field(default_factory=list)
    exporters: list[str] = Field(min_length=1)


class QueueConfig(StrictModel):
    queue_size: int = Field(100_000, gt=0, description="spans between receivers and processors")
    max_bytes: ByteSize = Field(256 * 1024**2, gt=0)
    min_batch_spans: int = Field(8192, gt=0, le=20_000,
                                 description="with processors or a persistent sending queue: gather "
                                             "this many spans before processing")
    batch_timeout: Duration = Field(0.2, description="… waiting at most this long (the OTel batch processor's default)")
    hold_for_events: Duration = Field(
        2.0, ge=0, description="how long a GenAI span without messages waits for the GenAI events its "
                               "producer sends as log records (only scopes that have sent such events); 0: not")


class MetricsTelemetry(StrictModel):
    address: str = "127.0.0.1:8888"
    tls: TLSServerSettings | None = None  # /metrics, /healthz and /readyz over TLS
    # /metrics with credentials (it names services and models, and counts their spend);
    # /healthz and /readyz stay open to probes
    auth: AuthSettings | None = None


class LogsTelemetry(StrictModel):
    level: str = Field("info", pattern="(?i)^(debug|info|warning|error)$")


class TelemetryConfig(StrictModel):
    metrics: MetricsTelemetry = MetricsTelemetry()
    logs: LogsTelemetry = LogsTelemetry()


class ServiceConfig(StrictModel):
    extensions: list[str] = Field(default_factory=list)
    pipelines: dict[str, PipelineConfig]
    telemetry: TelemetryConfig = TelemetryConfig()
    queue: QueueConfig = QueueConfig()
    shutdown_timeout: float = Field(30.0, gt=0)


_TOP_LEVEL = ("extensions", "receivers", "processors", "exporters", "service")


@dataclass
class BuiltConfig:
    service: ServiceConfig
    pipeline: PipelineConfig
    components: dict[str, dict[str, Any]]  # kind → id → validated config model


def validate_config(raw: dict[str, Any]) -> BuiltConfig:
    unknown = sorted(set(raw) - set(_TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level key; valid keys are: {', '.join(_TOP_LEVEL)}")
    if "service" not in raw:
        raise ConfigError("service: required; add service.pipelines.traces with receivers and exporters")
    service = validate_section("service", ServiceConfig, raw["service"])
    names = list(service.pipelines)
    if names != ["traces"]:
        raise ConfigError(
            f"service.pipelines: only one pipeline, named 'traces', is supported (got {names})"
        )
    pipeline = service.pipelines["traces"]

    components: dict[str, dict[str, Any]] = {}
    for kind in ("extensions", "receivers", "processors", "exporters"):
        section = raw.get(kind) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{kind}: expected a mapping of component ids to settings")
        used = service.extensions if kind == "extensions" else getattr(pipeline, kind)
        where = "service.extensions" if kind == "extensions" else f"service.pipelines.traces.{kind}"
        available = factories(kind)
        built: dict[str, Any] = {}
        for component_id in used:
            if used.count(component_id) > 1:
                raise ConfigError(f"{where}: {component_id!r} is listed twice")
            if component_id not in section:
                defined = ", ".join(section) or "none"
                raise ConfigError(
                    f"{where}: {component_id!r} is not defined under {kind} (defined: {defined})"
                )
            ctype = component_type(component_id)
            if ctype not in available:
                raise ConfigError(
                    f"{kind}.{component_id}: unknown {kind[:-1]} type {ctype!r}; available: "
                    f"{', '.join(sorted(available)) or 'none installed'}"
                )
            built[component_id] = validate_section(
                f"{kind}.{component_id}", available[ctype].config_model, section[component_id]
            )
        for component_id in section:
            if component_id not in used:
                log.warning("%s.%s is defined but not used (not listed in %s)", kind, component_id, where)
        components[kind] = built
    # setting → (the extension it names, what that extension must provide)
    refs = {f"receivers.{receiver_id}.{key}": (extension_id, "authenticator")
            for receiver_id, rcfg in components["receivers"].items()
            for key, extension_id in (rcfg.authenticators() if hasattr(rcfg, "authenticators") else {}).items()}
    if service.telemetry.metrics.auth is not None:
        refs["service.telemetry.metrics.auth.authenticator"] = (service.telemetry.metrics.auth.authenticator,
                                                                "authenticator")
    for exporter_id, ecfg in components["exporters"].items():
        storage = getattr(getattr(ecfg, "sending_queue", None), "storage", None)
        if storage is not None:
            refs[f"exporters.{exporter_id}.sending_queue.storage"] = (storage, "storage")
    extension_types = factories("extensions")
    for key, (extension_id, role) in refs.items():
        if extension_id not in components["extensions"]:
            raise ConfigError(
                f"{key}: {extension_id!r} is not an extension the service runs; define it under "
                f"extensions and list it in service.extensions (listed: {', '.join(service.extensions) or 'none'})"
            )
        provides = extension_types[component_type(extension_id)].provides
        if provides is not None and role not in provides:
            fitting = sorted(t for t, f in extension_types.items() if f.provides and role in f.provides)
            raise ConfigError(f"{key}: {extension_id!r} is not a{'n' if role[0] in 'aeiou' else ''} {role}; "
                              f"name an extension of type {' or '.join(fitting) or '(none installed)'}")
    prometheus = [cid for cid in pipeline.exporters if component_type(cid) == "prometheus"]
    if len(prometheus) > 1:
        raise ConfigError(
            f"service.pipelines.traces.exporters: {', '.join(prometheus)}: use one prometheus exporter; "
            "they would all serve the same series on the one /metrics endpoint"
        )
    split_endpoint(service.telemetry.metrics.address, "service.telemetry.metrics.address")
    return BuiltConfig(service, pipeline, components)


class Collector:
    """One collector: the traces pipeline, its components and the 8888 admin endpoint."""

    def __init__(self, config: dict[str, Any] | BuiltConfig) -> None:
        self.config = config if isinstance(config, BuiltConfig) else validate_config(config)
        self.telemetry = SelfTelemetry()
        self._stopped = threading.Event()
        self._ready = False
        self._evaluation_lock = threading.Lock()
        self._evaluation_processors: list[NamedProcessor] | None = None
        cfg = self.config
        self.extensions: dict[str, Any] = {
            cid: factories("extensions")[component_type(cid)].create(
                xcfg, ComponentContext(cid, self.telemetry))
            for cid, xcfg in cfg.components["extensions"].items()
        }
        self._started_extensions: list[Any] = []
        ctx = lambda cid: ComponentContext(cid, self.telemetry, self.extensions)  # noqa: E731

        self.exporters: list[QueuedExporter] = []
        for cid, ecfg in cfg.components["exporters"].items():
            exporter = factories("exporters")[component_type(cid)].create(ecfg, ctx(cid))
            sending_queue = getattr(ecfg, "sending_queue", SendingQueueConfig())
            self.exporters.append(
                QueuedExporter(
                    cid,
                    exporter,
                    sending_queue,
                    getattr(ecfg, "batch", BatchConfig()),
                    getattr(ecfg, "retry_on_failure", RetryConfig()),
                    self.telemetry,
                    resolve_storage(sending_queue.storage, f"exporters.{cid}.sending_queue.storage", ctx(cid)),
                )
            )
        queue_directories: dict[Any, str] = {}
        for queued in self.exporters:
            directory = getattr(queued.queue, "directory", None)
            if directory is None:
                continue
            other = queue_directories.setdefault(directory, queued.exporter_id)
            if other != queued.exporter_id:
                raise ValueError(f"exporters.{queued.exporter_id}.sending_queue.storage: its queue directory "
                                 f"{directory} is exporters.{other}'s too (their ids differ only in characters "
                                 "a directory name cannot hold); rename one")
        self.pipeline = Pipeline(
            "traces", self._build_processors(), self.exporters, self.telemetry,
            cfg.service.queue.queue_size, cfg.service.queue.max_bytes,
            cfg.service.queue.min_batch_spans, cfg.service.queue.batch_timeout,
            cfg.service.queue.hold_for_events,
        )
        self.receivers = [
            factories("receivers")[component_type(cid)].create(rcfg, ctx(cid))
            for cid, rcfg in cfg.components["receivers"].items()
        ]
        metrics = cfg.service.telemetry.metrics
        host, port = split_endpoint(metrics.address, "metrics.address")
        key = "service.telemetry.metrics"
        scrape_auth = resolve_authenticator(metrics.auth, f"{key}.auth", ctx("service.telemetry"))
        tls = ServerTLS(metrics.tls, f"{key}.tls") if metrics.tls else None
        admin: Any = self._admin_app()
        if scrape_auth is not None:
            admin = RequireAuth(admin, scrape_auth, RefusedRequests("service.telemetry", self.telemetry), frozenset(),
                                open_paths=frozenset({"/healthz", "/readyz"}))
        self.admin = ThreadedServer(admin, host, port, "metrics/health",
                                    ssl_context=tls.ssl_context() if tls else None)

    def _build_processors(self) -> list[NamedProcessor]:
        return [
            NamedProcessor(cid, factories("processors")[component_type(cid)].create(
                pcfg, ComponentContext(cid, self.telemetry)))
            for cid, pcfg in self.config.components["processors"].items()
        ]

    def evaluation_processors(self) -> list[NamedProcessor]:
        """The processors ``POST /v1/evaluate`` runs: instances of their own, built and started on
        first use, so that an evaluation never waits for the pipeline's ingestion batches (it
        costs a second copy of the processors' models in memory, once evaluations are asked for)."""
        with self._evaluation_lock:
            if self._evaluation_processors is None:
                started: list[NamedProcessor] = []
                try:
                    for named in self._build_processors():
                        named.processor.start()
                        started.append(named)
                except Exception:
                    for named in started:
                        named.processor.shutdown()
                    raise
                self._evaluation_processors = started
            return self._evaluation_processors

    def query_backend(self) -> Backend | None:
        """The store that ``/api/v1/query`` reads: the first ClickHouse exporter's."""
        for queued in self.exporters:
            if isinstance(queued.exporter, ClickHouseExporter):
                return queued.exporter.backend
        return None

    def erase_target(self) -> tuple[Backend, SchemaSpec] | None:
        """The store ``/api/v1/erase`` erases from (the one ``/api/v1/query`` reads) and its schema."""
        for queued in self.exporters:
            if isinstance(queued.exporter, ClickHouseExporter):
                backend = queued.exporter.backend
                return (backend, queued.exporter.schema) if backend is not None else None
        return None

    def _admin_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        registry = self.telemetry.registry

        @app.get("/metrics")
        def metrics(request: Request) -> Response:
            # OpenMetrics when the scraper asks for it (Prometheus does): it carries the exemplars
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
            return Response(encoder(registry), media_type=content_type)

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz")
        def readyz() -> Response:
            if self._ready and self.pipeline.accepting:
                return Response('{"status":"ready"}', media_type="application/json")
            return Response('{"status":"not ready"}', status_code=503, media_type="application/json")

        return app

    def start(self) -> None:
        try:  # first, so that a missing token file stops the start before anything runs
            for extension in self.extensions.values():
                extension.start()
                self._started_extensions.append(extension)
        except Exception:
            self._stop_extensions()
            raise
        self.admin.start()
        try:
            self.pipeline.start()
            routers = [build_query_router(self.query_backend), build_erase_router(self.erase_target),
                       build_evaluate_router(self)]
            for receiver in self.receivers:
                receiver.start(self.pipeline, routers)
        except Exception:
            self.shutdown()
            raise
        self._ready = True
        listening = [where for receiver in self.receivers for where in receiver.listening()]
        log.info("collector ready: %s; metrics and health on %s; processors: %s; exporters: %s",
                 ", ".join(listening), join_endpoint(self.admin.host, self.admin.port),
                 ", ".join(p.component_id for p in self.pipeline.processors) or "none",
                 ", ".join(e.exporter_id for e in self.exporters))

    def shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._ready = False
        log.info("shutting down: refusing new data, flushing queues")
        self.pipeline.accepting = False
        for receiver in self.receivers:
            receiver.shutdown()
        self.pipeline.shutdown(self.config.service.shutdown_timeout)
        with self._evaluation_lock:
            for named in self._evaluation_processors or []:
                named.processor.shutdown()
            self._evaluation_processors = None
        self._stop_extensions()
        self.admin.shutdown()
        log.info("collector stopped")

    def _stop_extensions(self) -> None:
        while self._started_extensions:
            self._started_extensions.pop().shutdown()

    def run_until_signal(self) -> None:
        # A flag and a sleeping loop, not an Event: the kernel may hand SIGTERM to any thread,
        # and then a main thread blocked in Event.wait() never runs the handler (its lock
        # acquire is not interrupted); and Event.set() in a handler can deadlock on the lock
        # the interrupted Event.wait() holds. Sleeping, the main thread runs it within 0.2 s.
        signals: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: signals.append(signum))
        self.start()
        while not signals:
            time.sleep(0.2)
        self.shutdown()
