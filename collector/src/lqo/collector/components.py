"""The component model: receivers, processors, exporters and their factories.

As in the OpenTelemetry Collector, a component is built by a factory registered under
its type name; the YAML names a component as ``type`` or ``type/name``. Other
distributions (lqo-processors, …) add factories through the ``lqo.receivers``,
``lqo.processors``, ``lqo.exporters`` and ``lqo.extensions`` entry-point groups.
Extensions live outside the pipeline; the ones listed in ``service.extensions`` start before
the receivers, and a receiver names an authenticator among them in ``auth.authenticator``.

Threading rules: ``Processor.process`` is called from one pipeline worker thread at a
time. ``Exporter.export`` is called from the exporter's own sender thread, one call at a
time. ``start``/``shutdown`` are called once each from the service thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from lqo.collector.model.spanbatch import SpanBatch

if TYPE_CHECKING:
    from lqo.collector.pipeline import Pipeline
    from lqo.collector.telemetry import SelfTelemetry


class ExportStatus(enum.Enum):
    SUCCESS = "success"
    RETRYABLE = "retryable"  # transient: the helper retries with backoff
    PERMANENT = "permanent"  # the data can never be written: counted and dropped
    TOO_LARGE = "too_large"  # not this much at once: the helper sends the batch in halves


@dataclass(frozen=True)
class ExportResult:
    status: ExportStatus
    message: str = ""

    @classmethod
    def ok(cls) -> ExportResult:
        return cls(ExportStatus.SUCCESS)


class Processor(Protocol):
    # Optional class attribute ``offloads = True``: the processor's time is spent without the
    # GIL (worker processes, native inference), so the pipeline runs the processors after it in
    # a thread of their own (lqo.collector.pipeline).
    def start(self) -> None: ...
    def process(self, batch: SpanBatch) -> SpanBatch: ...
    def shutdown(self) -> None: ...


class Exporter(Protocol):
    def start(self) -> None: ...
    def export(self, batch: SpanBatch) -> ExportResult: ...
    def shutdown(self) -> None: ...


class Receiver(Protocol):
    def start(self, pipeline: Pipeline) -> None: ...
    def listening(self) -> list[str]: ...  # once started: "OTLP/gRPC 127.0.0.1:4317", for the log
    def shutdown(self) -> None: ...


class Extension(Protocol):
    def start(self) -> None: ...
    def shutdown(self) -> None: ...


class ServerAuthenticator(Extension, Protocol):
    """An extension that receivers ask, per request, whether to let it in."""

    header: str  # lower-case HTTP header / gRPC metadata key that carries the credential
    challenge: str  # the scheme for a 401's WWW-Authenticate

    def authenticate(self, value: str | bytes | None) -> bool: ...


@dataclass(frozen=True)
class ComponentContext:
    """What every component is built with: its id and the collector's self-telemetry."""

    component_id: str
    telemetry: SelfTelemetry
    # The collector's extensions by id, started before the receivers (which resolve their
    # authenticator here).
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Factory:
    type: str
    config_model: type[BaseModel]
    create: Callable[[BaseModel, ComponentContext], Any]
    # Whether the component's optional dependencies are installed (default pipeline selection).
    available: Callable[[], bool] = lambda: True
    # What an extension can be named as in other components' settings ("authenticator",
    # "storage"), checked by --validate; None: not declared, checked only when the collector starts.
    provides: frozenset[str] | None = None


KINDS = ("receivers", "processors", "exporters", "extensions")
_REGISTRY: dict[str, dict[str, Factory]] = {kind: {} for kind in KINDS}
_entry_points_loaded = False


def register(kind: str, factory: Factory) -> Factory:
    _REGISTRY[kind][factory.type] = factory
    return factory


def _load_plugins() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    # Built-ins register on import; third-party distributions through entry points.
    import lqo.collector.exporters.clickhouse.factory
    import lqo.collector.exporters.prometheus
    import lqo.collector.extensions.bearertokenauth
    import lqo.collector.extensions.file_storage
    import lqo.collector.receivers.otlp  # noqa: F401

    for kind in KINDS:
        for ep in entry_points(group=f"lqo.{kind}"):
            factory = ep.load()
            register(kind, factory() if callable(factory) and not isinstance(factory, Factory) else factory)


def factories(kind: str) -> dict[str, Factory]:
    _load_plugins()
    return _REGISTRY[kind]


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]
