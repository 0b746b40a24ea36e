"""The ``bearertokenauth`` extension: the OpenTelemetry Collector contrib authenticator.

A receiver protocol with ``auth: {authenticator: bearertokenauth}`` refuses every request
whose ``Authorization`` header (or the configured ``header``) is not ``<scheme> <token>`` for
one of the configured tokens: OTLP/gRPC with UNAUTHENTICATED, HTTP with 401 — before the body
is read. Tokens come from ``token``, ``tokens`` or ``filename`` (one token per line, re-read
when the file changes, so a rotated Kubernetes Secret takes effect without a restart; during a
rotation both the old and the new token may be listed). Tokens are compared in constant time
and never logged.
"""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from lqo.collector.components import ComponentContext, Factory, register
from lqo.collector.config import StrictModel
from lqo.collector.filewatch import Recheck, file_stamps

log = logging.getLogger(__name__)

FILE_CHECK_INTERVAL_S = 1.0
_MAX_TOKEN_FILE = 64 * 1024


def _check_token(token: str) -> str:
    if not token or any(c.isspace() or not c.isprintable() for c in token) or not token.isascii():
        # The message must not quote the value: it is a secret.
        raise ValueError("a token must be non-empty printable ASCII without spaces")
    return token


class BearerTokenAuthConfig(StrictModel):
    scheme: str = Field("Bearer", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$",
                        description="the word before the token; empty = the header is the token")
    header: str = Field("Authorization", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    token: SecretStr | None = None
    tokens: list[SecretStr] | None = None
    filename: str | None = None

    @field_validator("token")
    @classmethod
    def _one(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_token(value.get_secret_value())
        return value

    @field_validator("tokens")
    @classmethod
    def _many(cls, value: list[SecretStr] | None) -> list[SecretStr] | None:
        if value is not None:
            if not value:
                raise ValueError("list at least one token")
            for token in value:
                _check_token(token.get_secret_value())
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> BearerTokenAuthConfig:
        given = [k for k in ("token", "tokens", "filename") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of token, tokens or filename "
                f"({'none' if not given else ' and '.join(given)} set); e.g. "
                "token: ${env:LQO_TOKEN} or filename: /etc/lqo/token"
            )
        return self


def read_token_file(path: str, key: str) -> tuple[bytes, ...]:
    """The tokens in ``path``, one per line (blank lines ignored), as bytes."""
    try:
        with open(path, "rb") as f:
            text = f.read(_MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise ValueError(f"{key}.filename: cannot read {path}: {exc.strerror}") from None
    if len(text) > _MAX_TOKEN_FILE:
        raise ValueError(f"{key}.filename: {path} is larger than {_MAX_TOKEN_FILE} bytes")
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            _check_token(line.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(
                f"{key}.filename: line {number} of {path} is not a token (printable ASCII, no spaces)"
            ) from None
        tokens.append(line)
    if not tokens:
        raise ValueError(f"{key}.filename: {path} holds no token")
    return tuple(tokens)


class BearerTokenAuth:
    """A server authenticator: ``authenticate(header value)`` → whether to let the request in."""

    def __init__(self, config: BearerTokenAuthConfig, context: ComponentContext) -> None:
        self.config = config
        self.key = f"extensions.{context.component_id}"
        self.header = config.header.lower()  # HTTP header and gRPC metadata key
        self.challenge = config.scheme or "Bearer"
        self._prefix = (config.scheme.lower() + " ").encode() if config.scheme else b""
        self._lock = threading.Lock()
        self._file_stamp: Any = None
        self._recheck = Recheck(FILE_CHECK_INTERVAL_S)
        if config.filename is None:
            secrets = [config.token] if config.token is not None else list(config.tokens or [])
            self._tokens = tuple(s.get_secret_value().encode() for s in secrets)
        else:
            self._tokens = ()

    def start(self) -> None:
        if self.config.filename is not None:
            self._file_stamp = self._stamp()
            self._tokens = read_token_file(self.config.filename, self.key)

    def shutdown(self) -> None:
        pass

    def _stamp(self) -> Any:
        return file_stamps([self.config.filename or ""])

    def _refresh(self) -> None:
        if not self._recheck.due():
            return
        with self._lock:
            stamp = self._stamp()
            if stamp == self._file_stamp:
                return
            try:
                tokens = read_token_file(self.config.filename or "", self.key)
            except ValueError as exc:
                # Mid-rotation (the file briefly missing or empty): keep the tokens we have.
                log.warning("%s: keeping the current tokens: %s", self.key, exc)
                return
            self._tokens, self._file_stamp = tokens, stamp
            log.info("%s: loaded %d token(s) from the changed file", self.key, len(tokens))

    def authenticate(self, value: str | bytes | None) -> bool:
        if value is None:
            return False
        if self.config.filename is not None:
            self._refresh()
        raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
        if self._prefix:
            if raw[: len(self._prefix)].lower() != self._prefix:
                return False
            raw = raw[len(self._prefix):].strip()
        ok = False
        for token in self._tokens:  # every token is compared, so timing tells nothing
            ok |= hmac.compare_digest(raw, token)
        return ok


def _create(config: BearerTokenAuthConfig, context: ComponentContext) -> BearerTokenAuth:
    return BearerTokenAuth(config, context)


FACTORY = register("extensions", Factory("bearertokenauth", BearerTokenAuthConfig, _create,
                                         provides=frozenset({"authenticator"})))


def client_header(config: BearerTokenAuthConfig, key: str) -> tuple[str, str]:
    """The header a client of this authenticator sends (for the collector's own ``lqo query``)."""
    if config.filename is not None:
        token = read_token_file(config.filename, key)[0].decode("ascii")
    elif config.token is not None:
        token = config.token.get_secret_value()
    else:
        token = (config.tokens or [])[0].get_secret_value()
    return config.header, f"{config.scheme} {token}" if config.scheme else token
