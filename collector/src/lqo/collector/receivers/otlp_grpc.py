"""OTLP/gRPC: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``, and
``…logs.v1.LogsService/Export`` for the GenAI events among log records
(``lqo.collector.model.genai_events``).

The request arrives as raw bytes (no generated servicer), so decoding and its errors
are ours. grpcio enforces ``max_receive_message_length`` on the decompressed message
and answers RESOURCE_EXHAUSTED itself for larger ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from lqo.collector.components import ServerAuthenticator
from lqo.collector.model.genai_events import decode_logs_protobuf
from lqo.collector.model.otlp import decode_protobuf
from lqo.collector.receivers.ingest import Ingest, Outcome, OutcomeKind
from lqo.collector.tls import ServerTLS

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


def _retry_status(message: str, delay_s: int) -> tuple[tuple[str, bytes], ...]:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=delay_s))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(retry)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class _RequireAuth(grpc.ServerInterceptor):
    """UNAUTHENTICATED for every call whose metadata the authenticator refuses, before the
    handler runs."""

    def __init__(self, auth: ServerAuthenticator, ingest: Ingest) -> None:
        self.auth = auth
        self.ingest = ingest

        def refuse(_request: Any, context: grpc.ServicerContext) -> None:
            self.ingest.refuse_request("grpc", "unauthenticated", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"missing or invalid credentials in the {self.auth.header} metadata")

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        values = [v for k, v in details.invocation_metadata or () if k == self.auth.header]
        if len(values) == 1 and self.auth.authenticate(values[0]):
            return continuation(details)
        return self._refuse


class OtlpGrpcServer:
    def __init__(
        self, ingest: Ingest, endpoint: str, max_recv_bytes: int, workers: int,
        retry_after_s: int, tls: ServerTLS | None = None, auth: ServerAuthenticator | None = None,
    ) -> None:
        self.ingest = ingest
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lqo-otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", max_recv_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=workers * 16,
            interceptors=[_RequireAuth(auth, ingest)] if auth is not None else None,
        )
        self._server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(
                SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)}),
            grpc.method_handlers_generic_handler(
                LOGS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export_logs)}),
        ))
        if tls is None:
            self.port = self._server.add_insecure_port(endpoint)
        else:
            self.port = self._server.add_secure_port(endpoint, tls.grpc_credentials())
        if self.port == 0:
            raise OSError(f"cannot listen for OTLP/gRPC on {endpoint}: address in use or invalid")

    def _refused(self, outcome: Outcome, context: grpc.ServicerContext) -> None:
        if outcome.kind is OutcomeKind.INVALID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, outcome.message)
        if outcome.kind is OutcomeKind.UNAVAILABLE:
            context.set_trailing_metadata(_retry_status(outcome.message, self.retry_after_s))
            context.abort(grpc.StatusCode.UNAVAILABLE, outcome.message)

    def _export_logs(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        self._refused(self.ingest.handle_logs(body, decode_logs_protobuf, "grpc"), context)
        return ExportLogsServiceResponse().SerializeToString()

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        outcome = self.ingest.handle(body, decode_protobuf, "grpc")
        self._refused(outcome, context)
        response = ExportTraceServiceResponse()
        if outcome.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=outcome.rejected, error_message=outcome.message
                )
            )
        return response.SerializeToString()

    def start(self) -> None:
        self._server.start()

    def shutdown(self, grace: float = 5.0) -> None:
        self._server.stop(grace).wait(grace + 1)
