"""The ``redaction`` processor: credentials that clients put in URLs, headers and error text are
replaced before any other processor, exporter or metric sees them.

Any producer's spans pass through the collector, not only those of ``lqo-instrument`` (whose
distro already redacts URL query secrets as spans start). HTTP instrumentations record the
request URL and redact only the query parameters the semantic conventions list (AWS and Google
Cloud Storage signatures); LLM APIs take keys there too (Gemini's REST API ``?key=``, others
``api_key``, ``access_token``). The same URL turns up in error text: an HTTP client's error
message quotes it, and that message becomes the span's status message and its ``exception``
event. Captured request headers (``http.request.header.authorization``…) hold the key itself.

What is replaced, with ``REDACTED``:

- in the URL attributes (``url.full``, ``url.query``, ``url.original``, ``http.url``,
  ``http.target``): the value of each secret query parameter, and user name and password
  (``https://REDACTED:REDACTED@host/``, as semconv asks of ``url.full``);
- in the status message and the ``exception.*`` attributes of span events: the same, in URLs
  quoted in the text;
- the whole value of credential headers captured as ``http.request.header.<name>`` /
  ``http.response.header.<name>``.

Vectorized: a quick test on each column's bytes (numpy) picks the few values that may hold a
secret, and only those are read into Python and rewritten (Arrow's regex kernels compile their
pattern on every call, ~0.3 ms for this one: more than the whole test). Only spans that hold a
secret are rewritten.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from lqo.collector.components import ComponentContext, Factory
from lqo.collector.config import StrictModel
from lqo.collector.model.spanbatch import SpanBatch

REDACTED = "REDACTED"
# Query parameter names (case-insensitive) whose values are credentials: semconv's list (AWS and
# Google Cloud Storage signatures) and what LLM and cloud APIs take keys and tokens in.
QUERY_PARAMS = (
    "key", "api_key", "apikey", "api-key", "access_token", "token", "auth", "password", "secret",
    "client_secret", "sig", "signature", "x-goog-signature", "x-goog-credential", "awsaccesskeyid",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
)
URL_ATTRIBUTES = ("url.full", "url.query", "url.original", "http.url", "http.target")
# Request and response headers (lower-case, as semconv names them) that carry credentials.
HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie",
           "set-cookie")
_HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")
# A URL's scheme and authority, up to the ``@`` that ends its user information.
_SCHEME = r"([A-Za-z][A-Za-z0-9+.\-]*://)"


class RedactionConfig(StrictModel):
    query_params: list[str] = Field(
        list(QUERY_PARAMS), description="query parameter names (case-insensitive) whose values are replaced")
    url_attributes: list[str] = Field(
        list(URL_ATTRIBUTES), description="span attributes holding a URL or its query")
    headers: list[str] = Field(
        list(HEADERS), description="header names whose captured values (http.request.header.<name>, "
                                   "http.response.header.<name>) are replaced whole")
    userinfo: bool = Field(True, description="replace user name and password in URLs")
    error_text: bool = Field(True, description="also redact URLs quoted in status messages and exception events")

    @field_validator("query_params", "headers")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a parameter or header name (letters, digits, . _ ~ -; "
                                 "at most 128 characters)")
        return names


def _keep_name(match: re.Match[str]) -> str:
    return match[1] + REDACTED


def _keep_scheme(match: re.Match[str]) -> str:
    return f"{match[1]}{REDACTED}:{REDACTED}@"


class _Patterns:
    """The rewrites, compiled once: user information first, then secret query parameters; in a URL
    attribute, and in text (a status message, an exception's message or stack trace), where a URL
    is quoted and a value ends at whitespace or a quote as well. Replacements are functions: a
    template (``\\1…``) costs ``re`` ~4 µs per call to expand, twice the search."""

    def __init__(self, config: RedactionConfig) -> None:
        names = "|".join(re.escape(n) for n in sorted(set(config.query_params), key=len, reverse=True))
        scheme = re.compile(_SCHEME)
        self.userinfo = re.compile(rf"{scheme.pattern}[^/?#@]*@") if config.userinfo else None  # at a URL's start
        self.query = re.compile(rf"([?&;](?:{names})=)[^&#;]+", re.IGNORECASE) if names else None
        self.in_text: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []
        if config.userinfo:
            self.in_text.append((re.compile(rf"\b{scheme.pattern}[^\s/?#@'\"<>]*@"), _keep_scheme))
        if names:
            self.in_text.append((re.compile(rf"([?&;](?:{names})=)[^&#;\s'\"<>]+", re.IGNORECASE), _keep_name))

    def url(self, value: str) -> str:
        if self.userinfo is not None and (found := self.userinfo.match(value)) is not None:
            value = _keep_scheme(found) + value[found.end():]
        if self.query is not None:  # a parameter follows ? & ; or starts the value (url.query)
            value = self.query.sub(_keep_name, "&" + value)[1:]
        return value

    def text(self, value: str) -> str:
        for pattern, keep in self.in_text:
            value = pattern.sub(keep, value)
        return value


class _Tails:
    """The last bytes of the secret parameters' names, lower-cased as ``|0x20`` (which leaves a
    lower-case name's bytes as they are): three, or fewer where a name is shorter."""

    def __init__(self, names: list[str]) -> None:
        self.width = min(3, *(len(n) for n in names))
        fold = (1 << 8 * self.width) // 255 * 0x20  # 0x20 in each byte
        self.fold = fold
        self.values = np.array(sorted({int.from_bytes(n.lower().encode()[-self.width:], "big") | fold for n in names}),
                               dtype=np.int64)


def _candidates(values: pa.Array, tails: _Tails | None, at_sign: bool) -> np.ndarray:
    """Per value: may a rewrite change it? A quick necessary test on the array's bytes, where a
    regex costs ~0.2 µs per value even on an empty string: a ``=`` right after the last bytes of
    a secret parameter's name (case folded), or an ``@`` (user information)."""
    mask = np.zeros(len(values), dtype=bool)
    _, offsets_buf, data_buf = values.buffers()[:3]
    if not len(values) or offsets_buf is None or data_buf is None:
        return mask
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=len(values) + 1, offset=4 * values.offset)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8, count=hi)
    hits = []
    if tails is not None:
        eq = np.flatnonzero(data[lo:hi] == 0x3D) + lo
        eq = eq[eq >= lo + tails.width]
        if len(eq):
            tail = np.zeros(len(eq), dtype=np.int64)
            for back in range(tails.width, 0, -1):
                tail = (tail << 8) | data[eq - back]
            hits.append(eq[np.isin(tail | tails.fold, tails.values)])
    if at_sign:
        hits.append(np.flatnonzero(data[lo:hi] == 0x40) + lo)
    for positions in hits:
        if len(positions):
            mask[np.searchsorted(offsets, positions, side="right") - 1] = True
    return mask


def _rewritten(values: pa.Array, candidates: np.ndarray, redact: Callable[[str], str]) -> pa.Array | None:
    """``values`` passed through ``redact`` where they changed (only ``candidates`` are tried),
    null elsewhere; None if none changed."""
    where = np.flatnonzero(candidates)
    if not len(where):
        return None
    before = values.take(pa.array(where)).to_pylist()
    changed = [(i, after) for i, value in zip(where.tolist(), before, strict=True)
               if value is not None and (after := redact(value)) != value]
    if not changed:
        return None
    index = np.full(len(values), -1, dtype=np.int64)
    index[[i for i, _ in changed]] = np.arange(len(changed))
    return pa.array([after for _, after in changed], pa.string()).take(pa.array(index, mask=index < 0))


class RedactionProcessor:
    def __init__(self, config: RedactionConfig, ctx: ComponentContext | None = None) -> None:
        self.config = config
        self._patterns = _Patterns(config)
        self._tails = _Tails(config.query_params) if config.query_params else None
        self._url_keys = frozenset(config.url_attributes)
        self._header_keys = frozenset(p + h.lower() for p in _HEADER_PREFIXES for h in config.headers)

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def redact_texts(self, texts: list[str]) -> list[str]:
        """Free text that is not on a span (evaluation results' explanations): credentials in the
        URLs it quotes, as in error text."""
        return [self._patterns.text(t) if t else t for t in texts]

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not len(batch):
            return batch
        batch = self._attributes(batch)
        if self.config.error_text:
            batch = self._status(batch)
            batch = self._events(batch)
        return batch

    def _attributes(self, batch: SpanBatch) -> SpanBatch:
        keys = batch.attribute_keys(self._url_keys | self._header_keys)
        if not keys:
            return batch
        rows = np.nonzero(batch.rows_with_keys(keys))[0]
        columns = batch.attribute_columns(keys, rows)
        new: dict[str, pa.Array] = {}
        for key, values in columns.items():
            if key in self._header_keys:  # the whole value (a JSON array where the producer sent a list)
                redacted = pc.if_else(pc.starts_with(values, "["), f'["{REDACTED}"]', REDACTED)
                differs = pc.fill_null(pc.not_equal(values, redacted), False)
                if pc.any(differs).as_py():
                    new[key] = pc.if_else(differs, redacted, pa.scalar(None, pa.string()))
            else:
                changed = _rewritten(values, self._candidates(values), self._patterns.url)
                if changed is not None:
                    new[key] = changed
        if not new:
            return batch
        touched = np.zeros(len(rows), dtype=bool)
        for values in new.values():
            touched |= values.is_valid().to_numpy(zero_copy_only=False)
        at = np.nonzero(touched)[0]
        take = pa.array(at)
        return batch.with_attribute_columns(rows[at], {k: v.take(take) for k, v in new.items()})

    def _status(self, batch: SpanBatch) -> SpanBatch:
        i = batch.table.schema.get_field_index("StatusMessage")
        column = batch.table.column(i)
        values = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        changed = _rewritten(values, self._candidates(values), self._patterns.text)
        if changed is None:
            return batch
        table = batch.table.set_column(i, batch.table.schema.field(i), pc.coalesce(changed, values))
        return dataclasses.replace(batch, table=table)  # the attribute caches still hold

    def _events(self, batch: SpanBatch) -> SpanBatch:
        if not self._patterns.in_text:
            return batch
        rows = self._rows_with_secret_in_exceptions(batch)
        if not len(rows):
            return batch
        events = batch.events(rows)
        out_rows, out_events = [], []
        for row, evs in zip(rows.tolist(), events, strict=True):
            rewritten = [(name, ts, {k: self._patterns.text(v) if k.startswith("exception.") else v
                                     for k, v in attrs.items()}) for name, ts, attrs in evs]
            if rewritten != evs:
                out_rows.append(row)
                out_events.append(rewritten)
        if not out_rows:
            return batch
        return batch.with_events(np.array(out_rows, dtype=np.int64), out_events)

    def _candidates(self, values: pa.Array) -> np.ndarray:
        return _candidates(values, self._tails, self.config.userinfo)

    def _rows_with_secret_in_exceptions(self, batch: SpanBatch) -> np.ndarray:
        """Rows with an event attribute ``exception.*`` that may hold a secret (no per-span Python)."""
        rows, values = batch.event_attributes("exception.")
        return np.unique(rows[self._candidates(values)])


FACTORY = Factory("redaction", RedactionConfig, lambda config, ctx: RedactionProcessor(config, ctx))
