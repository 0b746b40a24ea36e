"""The ``otlp`` receiver: OTLP/gRPC and OTLP/HTTP, either or both."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import Field, field_validator, model_validator

from lqo.collector.components import ComponentContext, Factory, ServerAuthenticator, register
from lqo.collector.config import ByteSize, StrictModel
from lqo.collector.http_server import ThreadedServer, join_endpoint, split_endpoint
from lqo.collector.pipeline import Pipeline
from lqo.collector.receivers.ingest import Ingest
from lqo.collector.receivers.otlp_grpc import OtlpGrpcServer
from lqo.collector.receivers.otlp_http import RequireAuth, build_router
from lqo.collector.tls import ServerTLS, TLSServerSettings

DEFAULT_LIMIT = 20 * 1024 * 1024


def _check_endpoint(value: str) -> str:
    split_endpoint(value, "endpoint")
    return value


class AuthSettings(StrictModel):
    authenticator: str = Field(min_length=1, description="an extension id listed in service.extensions")


class GrpcConfig(StrictModel):
    endpoint: str = "127.0.0.1:4317"
    max_recv_msg_size: ByteSize = Field(DEFAULT_LIMIT, gt=0)
    workers: int = Field(4, gt=0, le=64)
    tls: TLSServerSettings | None = None
    auth: AuthSettings | None = None

    _endpoint = field_validator("endpoint")(_check_endpoint)


class HttpConfig(StrictModel):
    endpoint: str = "127.0.0.1:4318"
    max_request_body_size: ByteSize = Field(DEFAULT_LIMIT, gt=0)
    traces_url_path: str = "/v1/traces"
    # GenAI events of spans sent as log records (their other log records are dropped); "" turns it off
    logs_url_path: str = "/v1/logs"
    tls: TLSServerSettings | None = None
    auth: AuthSettings | None = None  # also guards /v1/evaluate, and /api/v1/* unless query_auth is set
    # /api/v1/* (the stored spans, prompts included) with an authenticator of its own: the
    # senders' tokens then do not open it
    query_auth: AuthSettings | None = None

    _endpoint = field_validator("endpoint")(_check_endpoint)


class Protocols(StrictModel):
    grpc: GrpcConfig | None = None
    http: HttpConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        # As in the OTel Collector, `grpc:` with no settings enables it with defaults.
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data


class OtlpReceiverConfig(StrictModel):
    protocols: Protocols = Protocols(grpc=GrpcConfig(), http=HttpConfig())
    retry_after: int = Field(1, ge=1, le=300, description="seconds clients wait when refused")

    def authenticators(self) -> dict[str, str]:
        """config key → the extension id it names (checked by validate_config)."""
        refs = {
            f"protocols.{name}.auth.authenticator": proto.auth.authenticator
            for name, proto in (("grpc", self.protocols.grpc), ("http", self.protocols.http))
            if proto is not None and proto.auth is not None
        }
        if self.protocols.http is not None and self.protocols.http.query_auth is not None:
            refs["protocols.http.query_auth.authenticator"] = self.protocols.http.query_auth.authenticator
        return refs


def resolve_authenticator(
    auth: AuthSettings | None, key: str, context: ComponentContext
) -> ServerAuthenticator | None:
    if auth is None:
        return None
    extension = context.extensions.get(auth.authenticator)
    if extension is None:
        raise ValueError(f"{key}.authenticator: no extension {auth.authenticator!r} is running; "
                         "list it in service.extensions")
    if not callable(getattr(extension, "authenticate", None)):
        raise ValueError(f"{key}.authenticator: extension {auth.authenticator!r} is not an "
                         "authenticator (use e.g. bearertokenauth)")
    return extension


class OtlpReceiver:
    def __init__(self, config: OtlpReceiverConfig, context: ComponentContext) -> None:
        if config.protocols.grpc is None and config.protocols.http is None:
            raise ValueError(
                f"receivers.{context.component_id}.protocols: enable grpc, http or both"
            )
        self.config = config
        self.context = context
        self.grpc: OtlpGrpcServer | None = None
        self.http: ThreadedServer | None = None
        key = f"receivers.{context.component_id}.protocols"
        self.auth: dict[str, ServerAuthenticator | None] = {}
        self.tls: dict[str, ServerTLS | None] = {}
        for name, proto in (("grpc", config.protocols.grpc), ("http", config.protocols.http)):
            if proto is None:
                continue
            self.auth[name] = resolve_authenticator(proto.auth, f"{key}.{name}.auth", context)
            self.tls[name] = ServerTLS(proto.tls, f"{key}.{name}.tls") if proto.tls else None
        http = config.protocols.http
        self.query_auth = resolve_authenticator(http.query_auth if http else None,
                                                f"{key}.http.query_auth", context)

    def start(self, pipeline: Pipeline, extra_routers: list[APIRouter] | None = None) -> None:
        ingest = Ingest(self.context.component_id, pipeline, self.context.telemetry)
        protocols = self.config.protocols
        try:
            if protocols.grpc is not None:
                g = protocols.grpc
                self.grpc = OtlpGrpcServer(
                    ingest, g.endpoint, g.max_recv_msg_size, g.workers, self.config.retry_after,
                    tls=self.tls["grpc"], auth=self.auth["grpc"],
                )
                self.grpc.start()
            if protocols.http is not None:
                h = protocols.http
                app = FastAPI(title="LLM Quality Observer", docs_url=None, redoc_url=None,
                              openapi_url=None)
                app.include_router(
                    build_router(ingest, h.traces_url_path, h.max_request_body_size,
                                 self.config.retry_after, h.logs_url_path)
                )
                for router in extra_routers or []:
                    app.include_router(router)
                host, port = split_endpoint(h.endpoint, "endpoint")
                asgi = app if self.auth["http"] is None and self.query_auth is None else RequireAuth(
                    app, self.auth["http"], ingest, frozenset({h.traces_url_path, h.logs_url_path} - {""}),
                    self.query_auth)
                tls = self.tls["http"]
                self.http = ThreadedServer(asgi, host, port, "OTLP/HTTP",
                                           ssl_context=tls.ssl_context() if tls else None)
                self.http.start()
        except Exception:
            self.shutdown()
            raise

    def listening(self) -> list[str]:
        """What a client can send to, once started: ``OTLP/gRPC 127.0.0.1:4317 (TLS)``."""
        protocols = self.config.protocols
        return [f"{name} {join_endpoint(split_endpoint(proto.endpoint, 'endpoint')[0], server.port)}"
                + (" (TLS)" if self.tls[key] else "")
                for key, name, proto, server in (("grpc", "OTLP/gRPC", protocols.grpc, self.grpc),
                                                 ("http", "OTLP/HTTP", protocols.http, self.http))
                if proto is not None and server is not None]

    def shutdown(self) -> None:
        if self.grpc is not None:
            self.grpc.shutdown()
        if self.http is not None:
            self.http.shutdown()


def _create(config: OtlpReceiverConfig, context: ComponentContext) -> OtlpReceiver:
    return OtlpReceiver(config, context)


FACTORY = register("receivers", Factory("otlp", OtlpReceiverConfig, _create))
