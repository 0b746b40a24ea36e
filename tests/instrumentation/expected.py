"""What a recorded provider response says, read independently of the instrumentation's decoders.

The test oracle: each function reads one recorded response (JSON, SSE or NDJSON) the plain way
and returns the values the GenAI span must carry.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .replay import Exchange


@dataclass
class Expected:
    operation: str
    request_model: str | None
    response_model: str | None = None
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None
    reasoning: int | None = None
    finish_reasons: list[str] | None = None
    output_text: list[str] = field(default_factory=list)
    tool_calls: list[tuple[Any, Any, Any]] = field(default_factory=list)
    error_type: str | None = None
    streamed: bool = False


def _body(ex: Exchange) -> bytes:
    enc = next((v for k, v in ex.headers if k.lower() == "content-encoding"), "")
    return gzip.decompress(ex.body) if "gzip" in enc else ex.body


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:"))
        if data and data != b"[DONE]":
            out.append(json.loads(data))
    return out


def _ndjson(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def _args(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def expected_for(ex: Exchange) -> Expected:
    req = json.loads(ex.request_body) if ex.request_body else {}
    path = ex.path.split("?")[0]
    if path.startswith("/api/"):
        op = {"/api/chat": "chat", "/api/generate": "text_completion"}.get(path, "embeddings")
    elif path.endswith("/embeddings"):
        op = "embeddings"
    elif path.endswith("/v1/complete"):
        op = "text_completion"
    else:
        op = "chat"
    if path.startswith("/model/"):  # AWS Bedrock InvokeModel: the model is in the path
        req = {**req, "model": unquote(path.removeprefix("/model/").rpartition("/")[0])}
    exp = Expected(op, req.get("model"), streamed=ex.streamed)
    if ex.status >= 400:
        exp.error_type = str(ex.status)
        return exp
    raw = _body(ex)
    if path.endswith("/chat/completions"):
        _openai_chat(exp, raw, ex.streamed)
    elif path.endswith("/responses"):
        _responses(exp, raw, ex.streamed)
    elif path.endswith("/embeddings") and not path.startswith("/api/"):
        body = json.loads(raw)
        exp.response_model = body["model"]
        exp.input_tokens = body["usage"]["prompt_tokens"]
    elif path.endswith("/v1/messages") or path.endswith("/v1/complete") or path.startswith("/model/"):
        _anthropic(exp, raw, ex.streamed)
    else:
        _ollama(exp, raw, ex.streamed, op)
    return exp


def _openai_usage(exp: Expected, usage: dict[str, Any]) -> None:
    exp.input_tokens = usage["prompt_tokens"]
    exp.output_tokens = usage.get("completion_tokens")
    exp.cache_read = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    exp.reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")


def _openai_chat(exp: Expected, raw: bytes, streamed: bool) -> None:
    if not streamed:
        body = json.loads(raw)
        exp.response_model, exp.response_id = body["model"], body["id"]
        exp.finish_reasons = [c["finish_reason"] for c in body["choices"]]
        for c in body["choices"]:
            if c["message"].get("content"):
                exp.output_text.append(c["message"]["content"])
            for tc in c["message"].get("tool_calls") or []:
                exp.tool_calls.append((tc["id"], tc["function"]["name"], _args(tc["function"]["arguments"])))
        if body.get("usage"):
            _openai_usage(exp, body["usage"])
        return
    chunks = sse_events(raw)
    exp.response_model, exp.response_id = chunks[0]["model"], chunks[0]["id"]
    text: dict[int, str] = {}
    finish: dict[int, str] = {}
    tools: dict[tuple[int, int], list[Any]] = {}
    for ch in chunks:
        if ch.get("usage"):
            _openai_usage(exp, ch["usage"])
        for c in ch["choices"]:
            i = c["index"]
            text[i] = text.get(i, "") + (c["delta"].get("content") or "")
            if c.get("finish_reason"):
                finish[i] = c["finish_reason"]
            for tc in c["delta"].get("tool_calls") or []:
                slot = tools.setdefault((i, tc["index"]), [None, None, ""])
                slot[0] = tc.get("id") or slot[0]
                slot[1] = tc["function"].get("name") or slot[1]
                slot[2] += tc["function"].get("arguments") or ""
    if finish:
        exp.finish_reasons = [finish.get(i, "error") for i in sorted(text)]
    exp.output_text = [text[i] for i in sorted(text) if text[i]]
    exp.tool_calls = [(v[0], v[1], _args(v[2])) for _, v in sorted(tools.items())]


def _responses(exp: Expected, raw: bytes, streamed: bool) -> None:
    if streamed:
        finals = [e["response"] for e in sse_events(raw) if e.get("type") in
                  ("response.completed", "response.incomplete", "response.failed")]
        if not finals:
            created = [e["response"] for e in sse_events(raw) if e.get("type") == "response.created"]
            if created:
                exp.response_model, exp.response_id = created[0]["model"], created[0]["id"]
            return
        body = finals[-1]
    else:
        body = json.loads(raw)
    exp.response_model, exp.response_id = body["model"], body["id"]
    u = body.get("usage") or {}
    if u:
        exp.input_tokens, exp.output_tokens = u["input_tokens"], u["output_tokens"]
        exp.cache_read = u["input_tokens_details"]["cached_tokens"]
        exp.reasoning = u["output_tokens_details"]["reasoning_tokens"]
    calls = [i for i in body["output"] if i["type"] == "function_call"]
    if body["status"] == "completed":
        exp.finish_reasons = ["tool_calls" if calls else "stop"]
    elif body["status"] == "incomplete":
        exp.finish_reasons = [body["incomplete_details"]["reason"]]
    text = "".join(c.get("text", "") for i in body["output"] if i["type"] == "message" for c in i["content"])
    if text:
        exp.output_text = [text]
    exp.tool_calls = [(c["call_id"], c["name"], _args(c["arguments"])) for c in calls]


def _anthropic(exp: Expected, raw: bytes, streamed: bool) -> None:
    if streamed:
        msg: dict[str, Any] = {}
        blocks: dict[int, dict[str, Any]] = {}
        for e in sse_events(raw):
            if e["type"] == "message_start":
                msg = dict(e["message"])
            elif e["type"] == "message_delta":
                msg["stop_reason"] = e["delta"].get("stop_reason")
                msg["usage"].update({k: v for k, v in (e.get("usage") or {}).items() if v is not None})
            elif e["type"] == "content_block_start":
                blocks[e["index"]] = dict(e["content_block"], _json="")
            elif e["type"] == "content_block_delta":
                d = e["delta"]
                b = blocks[e["index"]]
                if d["type"] == "text_delta":
                    b["text"] = b.get("text", "") + d["text"]
                elif d["type"] == "input_json_delta":
                    b["_json"] += d["partial_json"]
            elif e["type"] == "completion":
                msg.setdefault("model", e["model"])
                msg.setdefault("id", e["id"])
                msg["completion"] = msg.get("completion", "") + e["completion"]
                msg["stop_reason"] = e.get("stop_reason") or msg.get("stop_reason")
        for b in blocks.values():
            if b["type"] == "tool_use" and b["_json"]:
                b["input"] = json.loads(b["_json"])
        msg["content"] = [blocks[i] for i in sorted(blocks)]
    else:
        msg = json.loads(raw)
    exp.response_model, exp.response_id = msg.get("model"), msg.get("id")
    if msg.get("stop_reason"):
        exp.finish_reasons = [msg["stop_reason"]]
    u = msg.get("usage") or {}
    if "input_tokens" in u:
        exp.cache_read = u.get("cache_read_input_tokens")
        exp.cache_creation = u.get("cache_creation_input_tokens")
        exp.input_tokens = u["input_tokens"] + (exp.cache_read or 0) + (exp.cache_creation or 0)
        exp.output_tokens = u.get("output_tokens")
    text = "".join(b.get("text", "") for b in msg.get("content") or [] if b["type"] == "text")
    text = text or msg.get("completion", "")
    if text:
        exp.output_text = [text]
    exp.tool_calls = [(b["id"], b["name"], b.get("input")) for b in msg.get("content") or [] if b["type"] == "tool_use"]


def _ollama(exp: Expected, raw: bytes, streamed: bool, op: str) -> None:
    lines = _ndjson(raw) if streamed else [json.loads(raw)]
    final = lines[-1]
    exp.response_model = final.get("model")
    exp.input_tokens = final.get("prompt_eval_count")
    exp.output_tokens = final.get("eval_count")
    if op == "embeddings":
        return
    exp.finish_reasons = [final.get("done_reason") or "stop"]
    key = "response" if op == "text_completion" else None
    text = "".join((ln.get(key) if key else (ln.get("message") or {}).get("content")) or "" for ln in lines)
    if text:
        exp.output_text = [text]
    for ln in lines:
        for tc in (ln.get("message") or {}).get("tool_calls") or []:
            exp.tool_calls.append((tc.get("id"), tc["function"]["name"], tc["function"]["arguments"]))
