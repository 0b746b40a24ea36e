"""``POST /v1/evaluate``: a prompt and answer checked now, by the pipeline's processors.

For applications that want a verdict before they act (block a prompt injection, hold back an
answer with personal data) or that send no OTLP. The request becomes one GenAI span
(``gen_ai.input.messages`` etc. in the semantic conventions' JSON) that runs through the
configured processors in order on the request's thread (:meth:`Pipeline.evaluate`) — instances
of their own, so that an evaluation never waits for an ingestion batch. The answer holds the checks' ``gen_ai.evaluation.result`` events, ``lqo.flags``, the ``lqo.*``
attributes and the messages as the processors left them (redacted, if ``pii`` redacts). With
``"store": true`` the span also goes to the exporters, as if it had arrived over OTLP.

Served on the OTLP/HTTP port, beside ``/v1/traces``. Bodies are JSON, at most
:data:`MAX_BODY_BYTES` after decompression. At most :data:`MAX_IN_PROGRESS` evaluations are read
or run at once (each holds its body and, queued, a thread): more get 503 + Retry-After, and a
body that has not arrived within :data:`BODY_TIMEOUT_S` gets 408, so slow senders cannot hold
the places.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
from typing import Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from lqo.collector.http_server import json_error, media_type
from lqo.collector.model.spanbatch import EVALUATION_EVENT, FLAGS, SCHEMA, SpanBatch
from lqo.collector.receivers.otlp_http import BadEncoding, BodyTooLarge, ClientGone, read_body

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_IN_PROGRESS = 16
BODY_TIMEOUT_S = 30.0
MAX_MESSAGES = 1000
EXPORT_WAIT_S = 1.0
_SCORE, _LABEL, _EXPLANATION = ("gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label",
                                "gen_ai.evaluation.explanation")

Messages = str | list[dict[str, Any]]
Scalar = str | int | float | bool


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Messages | None = Field(None, description="the prompt: text, or gen_ai.input.messages")
    output: Messages | None = Field(None, description="the answer: text, or gen_ai.output.messages")
    system_instructions: Messages | None = Field(
        None, description="text, or gen_ai.system_instructions parts")
    model: str = Field("", max_length=256)
    provider: str = Field("", max_length=128)
    operation: str = Field("chat", min_length=1, max_length=64)
    service_name: str = Field("lqo-evaluate", min_length=1, max_length=256)
    attributes: dict[str, Scalar] = Field(
        default_factory=dict, max_length=128, description="more span attributes (gen_ai.* keys included)")
    store: bool = Field(False, description="also export the evaluated span, as if it came over OTLP")

    @field_validator("input", "output", "system_instructions")
    @classmethod
    def _messages(cls, value: Messages | None) -> Messages | None:
        if isinstance(value, list) and len(value) > MAX_MESSAGES:
            raise ValueError(f"at most {MAX_MESSAGES} messages")
        return value

    @field_validator("attributes")
    @classmethod
    def _keys(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        for key in value:
            if not key or len(key) > 256 or key.startswith("lqo."):
                raise ValueError(f"{key[:40]!r}: keys are 1-256 characters and lqo.* is the checks' own")
        return value

    @model_validator(mode="after")
    def _something_to_check(self) -> EvaluateRequest:
        if self.input is None and self.output is None:
            raise ValueError("give input, output or both")
        return self


class Evaluation(BaseModel):
    name: str
    score: float | None = None
    label: str = ""
    explanation: str = ""


class EvaluateResponse(BaseModel):
    trace_id: str
    span_id: str
    flags: list[str]
    evaluations: list[Evaluation]
    attributes: dict[str, str]
    input: Any = None
    output: Any = None
    system_instructions: Any = None
    failed: list[str] = Field(default_factory=list, description="processors that raised on this request")
    dropped: bool = Field(False, description="a filtering processor dropped the span: nothing was checked after it")
    stored: bool | Literal["refused"] = False


def _as_messages(value: Messages | None, role: str) -> list[dict[str, Any]] | None:
    if value is None or isinstance(value, list):
        return value
    if role == "system":
        return [{"type": "text", "content": value}]
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": value}]}
    if role == "assistant":
        message["finish_reason"] = "stop"
    return [message]


def build_span(req: EvaluateRequest) -> SpanBatch:
    """The request as one GenAI span of the pipeline's schema."""
    now = time.time_ns()
    attributes: dict[str, str] = {key: json.dumps(value) if isinstance(value, bool) else str(value)
                                  for key, value in req.attributes.items()}
    attributes["gen_ai.operation.name"] = req.operation
    if req.model:
        attributes["gen_ai.request.model"] = req.model
    if req.provider:
        attributes["gen_ai.provider.name"] = req.provider
    for key, value, role in (("gen_ai.input.messages", req.input, "user"),
                             ("gen_ai.output.messages", req.output, "assistant"),
                             ("gen_ai.system_instructions", req.system_instructions, "system")):
        messages = _as_messages(value, role)
        if messages is not None:
            attributes[key] = json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
    row: dict[str, Any] = {name: [] if name.startswith(("Events.", "Links.")) else "" for name in SCHEMA.names}
    row.update(
        Timestamp=dt.datetime.fromtimestamp(now / 1e9, dt.UTC), TraceId=secrets.token_hex(16),
        SpanId=secrets.token_hex(8), SpanName=f"{req.operation} {req.model}".strip(), SpanKind="Internal",
        ServiceName=req.service_name, ResourceAttributes=[("service.name", req.service_name)],
        ScopeName="lqo.evaluate", SpanAttributes=list(attributes.items()), Duration=0, StatusCode="Unset",
    )
    table = pa.Table.from_pylist([row], schema=SCHEMA)
    return SpanBatch(table, sum(len(k) + len(v) for k, v in attributes.items()))


def read_verdicts(batch: SpanBatch, failed: list[str], stored: bool | Literal["refused"]) -> EvaluateResponse:
    if not len(batch):
        return EvaluateResponse(trace_id="", span_id="", flags=[], evaluations=[], attributes={}, failed=failed,
                                dropped=True, stored=False)
    [span] = batch.table.to_pylist()
    attributes = dict(span["SpanAttributes"])
    evaluations = [
        Evaluation(name=attrs.get("gen_ai.evaluation.name", ""), score=_float(attrs.get(_SCORE)),
                   label=attrs.get(_LABEL, ""), explanation=attrs.get(_EXPLANATION, ""))
        for name, attrs in zip(span["Events.Name"], map(dict, span["Events.Attributes"]), strict=True)
        if name == EVALUATION_EVENT
    ]
    flags = attributes.get(FLAGS)
    return EvaluateResponse(
        trace_id=span["TraceId"], span_id=span["SpanId"],
        flags=json.loads(flags) if flags else [], evaluations=evaluations,
        attributes={k: v for k, v in sorted(attributes.items()) if k.startswith("lqo.")},
        input=_json(attributes.get("gen_ai.input.messages")),
        output=_json(attributes.get("gen_ai.output.messages")),
        system_instructions=_json(attributes.get("gen_ai.system_instructions")),
        failed=failed, stored=stored,
    )


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _json(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value  # a processor left text that is no longer JSON: return it as it is


def build_evaluate_router(collector: Any) -> APIRouter:
    """The route, served by ``collector`` (a :class:`~lqo.collector.service.Collector`): its
    :meth:`evaluation_processors`, its pipeline's metrics and exporters."""
    router = APIRouter()
    in_progress = 0  # read and changed on the server's one event loop only

    @router.post("/v1/evaluate")
    async def evaluate(request: Request) -> Response:
        nonlocal in_progress
        content_type = media_type(request)
        if content_type != "application/json":
            return json_error(415, f"unsupported Content-Type {content_type or '(none)'!r}; send application/json")
        if in_progress >= MAX_IN_PROGRESS:
            return json_error(503, f"{MAX_IN_PROGRESS} evaluations are in progress; retry after a pause",
                              {"Retry-After": "1"})
        in_progress += 1
        try:
            return await _evaluate(request)
        finally:
            in_progress -= 1

    async def _evaluate(request: Request) -> Response:
        try:
            body = await asyncio.wait_for(read_body(request, MAX_BODY_BYTES), BODY_TIMEOUT_S)
            req = EvaluateRequest.model_validate_json(body)
        except TimeoutError:
            return json_error(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s",
                              {"Connection": "close"})
        except BodyTooLarge:
            return json_error(413, f"request body exceeds {MAX_BODY_BYTES} bytes after decompression")
        except BadEncoding as exc:
            return json_error(400, str(exc))
        except ClientGone:
            return Response(status_code=400)  # never delivered
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return json_error(400, f"{where}: {first['msg']}")
        except RecursionError:
            return json_error(400, "body: nested too deeply")
        if not collector.pipeline.accepting:
            return json_error(503, "the collector is not ready", {"Retry-After": "1"})
        result = await run_in_threadpool(_run, collector, req)
        return Response(result.model_dump_json(), media_type="application/json")

    return router


def _run(collector: Any, req: EvaluateRequest) -> EvaluateResponse:
    pipeline = collector.pipeline
    batch, failed = pipeline.evaluate(build_span(req), collector.evaluation_processors())
    stored: bool | Literal["refused"] = False
    if req.store and len(batch):
        stored = True if pipeline.export_processed(batch, EXPORT_WAIT_S) else "refused"
    return read_verdicts(batch, failed, stored)

