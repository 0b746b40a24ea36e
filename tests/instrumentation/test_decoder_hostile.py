"""Every API-family decoder survives hostile answers: any value of any type anywhere.

A decoder that raised would lose the call's response, usage and metrics (the span ends with its
request side only, ``_call._complete``), so none may. From one real exchange per family and
operation (the recordings, and the written exchanges of the families without any), each value in
the request, the answer and each of the first stream events is replaced in turn by values of
every JSON type; the family decodes the result with content capture on and off, and what it
records must still be valid span attributes and serializable message content.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from lqo.instrumentation.httpx._content import bounded_json
from lqo.instrumentation.httpx._record import CallRecord
from lqo.instrumentation.httpx.decoders import FAMILIES, Router

from . import test_bedrock_converse as converse
from . import test_cohere as cohere
from . import test_gemini as gemini
from .replay import RECORDINGS, load_cassette

HOSTILE: list[Any] = [None, -1, 2**70, 1.5, float("nan"), True, "", "x" * 300, [], {}, [None, 1], {"type": None}]
MAX_PATHS = 150  # value positions replaced per document (the first, in document order)
MAX_EVENTS = 10  # stream events mutated per stream


def _events(body: bytes) -> list[tuple[str, Any]]:
    """(event name, JSON data) of an SSE or NDJSON body."""
    out = []
    text = body.replace(b"\r\n", b"\n")
    if b"data:" in text:
        for block in text.split(b"\n\n"):
            name = b"".join(line[6:].strip() for line in block.split(b"\n") if line.startswith(b"event:"))
            data = b"\n".join(line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:"))
            if data and data != b"[DONE]":
                out.append((name.decode(), json.loads(data)))
    else:
        out = [("", json.loads(line)) for line in text.split(b"\n") if line.strip()]
    return out


def _samples() -> dict[str, tuple[str, dict[str, Any], Any, list[tuple[str, Any]] | None]]:
    """name -> (path, request body, answer or None, stream events or None): one of each."""
    out: dict[str, Any] = {}
    for path in sorted(RECORDINGS.glob("*/*.yaml")):
        for ex in load_cassette(path):
            route = Router().route(ex.path.split("?", 1)[0])
            if ex.method != "POST" or ex.status != 200 or route is None or not ex.request_body:
                continue
            if "gzip" in str(ex.headers).lower():
                continue
            request = json.loads(ex.request_body)
            key = f"{route[0].name}/{route[1]}/{'stream' if ex.streamed else 'whole'}"
            if key not in out and isinstance(request, dict):
                out[key] = (ex.path.split("?", 1)[0], request,
                            None if ex.streamed else json.loads(ex.body), _events(ex.body) if ex.streamed else None)
    completion = {"model": "gpt-3.5-turbo-instruct", "prompt": ["Say", "hi"], "max_tokens": 5, "n": 2, "stream": True}
    usage = {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    choices = [{"text": " hi", "index": i, "logprobs": None, "finish_reason": "stop"} for i in (0, 1)]
    identity = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct"}
    out["openai.completions/whole"] = ("/v1/completions", completion, {**identity, "choices": choices, "usage": usage},
                                       None)
    out["openai.completions/stream"] = ("/v1/completions", completion, None,
                                        [("", {**identity, "choices": [c]}) for c in choices]
                                        + [("", {**identity, "choices": [], "usage": usage})])
    converse_path = f"/model/{converse.MODEL}/converse"
    out["converse/whole"] = (converse_path, converse.REQUEST, converse.ANSWER, None)
    out["converse/stream"] = (converse_path + "-stream", converse.REQUEST, None, converse.STREAM_EVENTS)
    gemini_request = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]},
                     {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
                     {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": 2}}},
                                                {"inlineData": {"mimeType": "image/png", "data": "AA=="}},
                                                {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://b/f"}}]}],
        "systemInstruction": {"parts": [{"text": "terse"}]},
        "generationConfig": {"temperature": 0.2, "stopSequences": ["END"], "candidateCount": 2,
                             "responseMimeType": "application/json"},
        "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}],
    }
    out["gemini/whole"] = (gemini.PATH, gemini_request, gemini.ANSWER, None)
    out["gemini/stream"] = (gemini.STREAM_PATH.split("?")[0], gemini_request, None, [("", e) for e in gemini.STREAM])
    out["gemini/embeddings"] = ("/v1beta/models/e:batchEmbedContents",
                                {"requests": [{"model": "models/e", "content": {"parts": [{"text": "a"}]},
                                               "outputDimensionality": 3}]},
                                {"embeddings": [{"values": [0.1, 0.2, 0.3]}]}, None)
    cohere_request = {"model": cohere.MODEL, "messages": cohere.MESSAGES, "tools": cohere.TOOLS, **cohere.PARAMS}
    out["cohere/whole"] = ("/v2/chat", cohere_request, cohere.ANSWER, None)
    out["cohere/stream"] = ("/v2/chat", {**cohere_request, "stream": True}, None, [(e["type"], e) for e in cohere.STREAM])
    return out


SAMPLES = _samples()


def test_every_family_has_a_sample() -> None:
    covered = {Router().route(path)[0].name for path, *_ in SAMPLES.values()}  # type: ignore[index]
    assert covered == {f.name for f in FAMILIES}


def _mutations(doc: Any) -> Iterator[Any]:
    """``doc`` with one value replaced by each hostile value, position by position."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, at: tuple[Any, ...]) -> None:
        if len(paths) >= MAX_PATHS:
            return
        paths.append(at)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*at, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*at, i))

    walk(doc, ())
    for at in paths:
        for value in HOSTILE:
            if not at:
                yield value
                continue
            out = copy.deepcopy(doc)
            node = out
            for step in at[:-1]:
                node = node[step]
            node[at[-1]] = value
            yield out


def _valid_attribute(value: Any) -> bool:
    scalar = (str, bool, int, float)
    if isinstance(value, scalar):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, scalar) for v in value) \
        and len({type(v) for v in value}) <= 1


def _check(rec: CallRecord) -> None:
    for key, value in rec.attrs.items():
        assert _valid_attribute(value), (key, value)
    if rec.finish_reasons is not None:
        assert all(isinstance(r, str) for r in rec.finish_reasons), rec.finish_reasons
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens"):
        value = getattr(rec, name)
        assert value is None or (isinstance(value, int) and not isinstance(value, bool)), (name, value)
    for name in ("response_model",):
        assert getattr(rec, name) is None or isinstance(getattr(rec, name), str)
    for value in (rec.input_messages, rec.output_messages, rec.system_instructions, rec.tool_definitions):
        if value:
            bounded_json(value, 32768)


def _decode(path: str, request: Any, answer: Any, events: list[tuple[str, Any]] | None, capture: bool) -> None:
    family, operation = Router().route(path)  # type: ignore[misc]
    rec = CallRecord(operation, capture)
    if isinstance(request, dict):
        family.request(operation, request, rec)
    if events is None:
        family.response(operation, answer, rec)
    else:
        stream = family.stream(operation, rec)
        for name, data in events:
            stream.event(name, data)
        stream.finish()
    _check(rec)


@pytest.mark.parametrize("capture", [False, True], ids=["no_content", "content"])
@pytest.mark.parametrize("name", list(SAMPLES))
def test_hostile_values_anywhere(name: str, capture: bool) -> None:
    path, request, answer, events = SAMPLES[name]
    _decode(path, request, answer, events, capture)  # the sample itself
    for bad in _mutations(request):
        _decode(path, bad, answer, events, capture)
    if events is None:
        for bad in _mutations(answer):
            _decode(path, request, bad, events, capture)
        return
    for i, (event_name, data) in enumerate(events[:MAX_EVENTS]):
        for bad in _mutations(data):
            _decode(path, request, answer, [*events[:i], (event_name, bad), *events[i + 1:]], capture)
