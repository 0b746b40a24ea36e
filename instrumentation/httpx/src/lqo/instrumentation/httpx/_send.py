"""The function put in place of ``Client.send`` / ``AsyncClient.send``: every request goes through it.

It is generated (as ``dataclasses`` generates ``__init__``) with the parameters of the ``send``
it replaces — same names, kinds and defaults — and forwards them one by one. A wrapper taking
``*args, **kwargs`` builds a tuple and a dict on every request and unpacks them again: ~0.7 µs
of the ~1 µs a pass-through costs, for every request the application makes, LLM call or not.
Where the original's signature cannot be read or reproduced, the generic wrapper is used.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from ._call import start_call
from ._telemetry import Telemetry

try:  # the keys is_instrumentation_enabled() reads, looked up in the context send() already has
    from opentelemetry.instrumentation.utils import (  # type: ignore[attr-defined]
        _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS,
    )
except ImportError:  # a future opentelemetry-instrumentation that moved it: the plain key below
    _SUPPRESS = "suppress_instrumentation"  # type: ignore[assignment]
_SUPPRESS_PLAIN = "suppress_instrumentation"  # suppress_instrumentation() sets it too (compatibility)

_TEMPLATE = """\
{async_}def send({params}):
    ctx = _get_current()
    call = None
    if _tel.enabled and not (ctx.get(_SUPPRESS) or ctx.get(_SUPPRESS_PLAIN)):
        try:
            call = _start_call(_tel, {request}, ctx)
        except Exception as exc:
            _tel.internal_error("request", exc)
    if call is None:  # not an LLM call, suppressed, uninstrumented, or failed
        return {await_}_original({forward})
    token = _attach(_set_span_in_context(call.span, ctx))
    try:
        response = {await_}_original({forward})
    except BaseException as exc:
        call.end(exc)
        raise
    finally:
        _detach(token)
    try:
        call.on_response(response, _stream_base, {is_async})
    except Exception as exc:
        _tel.internal_error("response", exc)
        call.end(None)
    return response
"""
_GENERIC = ("self, *args, **kwargs", "self, *args, **kwargs", 'args[0] if args else kwargs.get("request")')
# Names the template uses: a parameter named like one of them would shadow it.
_RESERVED = frozenset({"ctx", "call", "exc", "token", "response", "_get_current", "_tel", "_SUPPRESS",
                       "_SUPPRESS_PLAIN", "_start_call", "_original", "_attach", "_set_span_in_context",
                       "_detach", "_stream_base"})
_P = inspect.Parameter


def _signature(original: Any, defaults: dict[str, Any]) -> tuple[str, str, str]:
    """(parameters, forwarded arguments, the request expression) for the template."""
    try:
        params = list(inspect.signature(original).parameters.values())
    except (TypeError, ValueError):
        return _GENERIC
    positional = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
    if len(params) < 2 or params[0].kind not in positional or params[1].kind not in positional:
        return _GENERIC  # not (self, request, …)
    if any(p.name in _RESERVED for p in params):
        return _GENERIC
    decl: list[str] = []
    forward: list[str] = []
    star = False
    for i, p in enumerate(params):
        if i and p.kind is not _P.POSITIONAL_ONLY and params[i - 1].kind is _P.POSITIONAL_ONLY:
            decl.append("/")
        if p.kind is _P.KEYWORD_ONLY and not star:
            decl.append("*")
            star = True
        default = ""
        if p.default is not _P.empty:
            defaults[f"_default_{i}"] = p.default
            default = f"=_default_{i}"
        if p.kind is _P.VAR_POSITIONAL:
            decl.append(f"*{p.name}")
            forward.append(f"*{p.name}")
            star = True
        elif p.kind is _P.VAR_KEYWORD:
            decl.append(f"**{p.name}")
            forward.append(f"**{p.name}")
        elif p.kind is _P.KEYWORD_ONLY:
            decl.append(f"{p.name}{default}")
            forward.append(f"{p.name}={p.name}")
        else:
            decl.append(f"{p.name}{default}")
            forward.append(p.name)
    if params[-1].kind is _P.POSITIONAL_ONLY:
        decl.append("/")
    return ", ".join(decl), ", ".join(forward), params[1].name


def make_send(tel: Telemetry, original: Any, stream_base: type, is_async: bool) -> Any:
    """The instrumented ``send``: a GenAI span around LLM calls, every other request straight through."""
    namespace: dict[str, Any] = {
        "_get_current": otel_context.get_current,
        "_attach": otel_context.attach,
        "_detach": otel_context.detach,
        "_set_span_in_context": trace.set_span_in_context,
        "_SUPPRESS": _SUPPRESS,
        "_SUPPRESS_PLAIN": _SUPPRESS_PLAIN,
        "_start_call": start_call,
        "_tel": tel,
        "_original": original,
        "_stream_base": stream_base,
    }
    params, forward, request = _signature(original, namespace)
    source = _TEMPLATE.format(async_="async " if is_async else "", await_="await " if is_async else "",
                              params=params, forward=forward, request=request, is_async=is_async)
    exec(compile(source, f"<lqo send for {getattr(original, '__qualname__', 'send')}>", "exec"), namespace)
    return functools.wraps(original)(namespace["send"])
