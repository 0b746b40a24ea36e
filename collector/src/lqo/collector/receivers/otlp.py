"""The ``otlp`` receiver: OTLP/gRPC and OTLP/HTTP, either or both."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import Field, field_validator, model_validator

from lqo.collector.components import ComponentContext, Factory, register
from lqo.collector.config import ByteSize, StrictModel
from lqo.collector.http_server import ThreadedServer, split_endpoint
from lqo.collector.pipeline import Pipeline
from lqo.collector.receivers.ingest import Ingest
from lqo.collector.receivers.otlp_grpc import OtlpGrpcServer
from lqo.collector.receivers.otlp_http import build_router

DEFAULT_LIMIT = 20 * 1024 * 1024


def _check_endpoint(value: str) -> str:
    split_endpoint(value, "endpoint")
    return value


class GrpcConfig(StrictModel):
    endpoint: str = "127.0.0.1:4317"
    max_recv_msg_size: ByteSize = Field(DEFAULT_LIMIT, gt=0)
    workers: int = Field(4, gt=0, le=64)

    _endpoint = field_validator("endpoint")(_check_endpoint)


class HttpConfig(StrictModel):
    endpoint: str = "127.0.0.1:4318"
    max_request_body_size: ByteSize = Field(DEFAULT_LIMIT, gt=0)
    traces_url_path: str = "/v1/traces"

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

    def start(self, pipeline: Pipeline, extra_routers: list[APIRouter] | None = None) -> None:
        ingest = Ingest(self.context.component_id, pipeline, self.context.telemetry)
        protocols = self.config.protocols
        try:
            if protocols.grpc is not None:
                g = protocols.grpc
                self.grpc = OtlpGrpcServer(
                    ingest, g.endpoint, g.max_recv_msg_size, g.workers, self.config.retry_after
                )
                self.grpc.start()
            if protocols.http is not None:
                h = protocols.http
                app = FastAPI(title="LLM Quality Observer", docs_url=None, redoc_url=None,
                              openapi_url=None)
                app.include_router(
                    build_router(ingest, h.traces_url_path, h.max_request_body_size,
                                 self.config.retry_after)
                )
                for router in extra_routers or []:
                    app.include_router(router)
                host, port = split_endpoint(h.endpoint, "endpoint")
                self.http = ThreadedServer(app, host, port, "OTLP/HTTP")
                self.http.start()
        except Exception:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        if self.grpc is not None:
            self.grpc.shutdown()
        if self.http is not None:
            self.http.shutdown()


def _create(config: OtlpReceiverConfig, context: ComponentContext) -> OtlpReceiver:
    return OtlpReceiver(config, context)


FACTORY = register("receivers", Factory("otlp", OtlpReceiverConfig, _create))
