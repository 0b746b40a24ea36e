"""TLS for the receivers' servers: the OpenTelemetry Collector's ``tls`` server settings.

``cert_file`` and ``key_file`` (PEM) turn TLS on; ``client_ca_file`` also requires every
client to present a certificate that CA signed (mutual TLS). With ``reload_interval`` set,
the files are checked at most that often, on a new connection, and a changed set is loaded
for the connections after it (cert-manager and Kubernetes Secret rotation) — a set that does
not load (half-written, mismatched) is logged and the previous one kept.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import grpc

from lqo.collector.config import Duration, StrictModel
from lqo.collector.filewatch import Recheck, file_stamps

log = logging.getLogger(__name__)


class TLSServerSettings(StrictModel):
    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    reload_interval: Duration = 0.0


@dataclass(frozen=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None
    stamp: tuple[Any, ...]


class ServerTLS:
    """The certificate material of one server, loaded and checked at start, reloaded on change."""

    def __init__(self, settings: TLSServerSettings, key: str) -> None:
        self.settings = settings
        self.key = key  # the config key, for messages: receivers.otlp.protocols.grpc.tls
        self._lock = threading.Lock()
        self._recheck = Recheck(settings.reload_interval)
        self._material, self._context = self._load()

    # ------------------------------------------------------------------ loading

    def _paths(self) -> list[tuple[str, str]]:
        s = self.settings
        paths = [("cert_file", s.cert_file), ("key_file", s.key_file)]
        if s.client_ca_file:
            paths.append(("client_ca_file", s.client_ca_file))
        return paths

    def _stamp(self) -> tuple[Any, ...]:
        return file_stamps(path for _, path in self._paths())

    def _load(self) -> tuple[_Material, ssl.SSLContext]:
        # ssl loads certificates from paths only, gRPC from bytes: read both from one version
        # of the files, retrying when they change in between (a rotation in progress).
        for _ in range(3):
            stamp = self._stamp()
            data: dict[str, bytes] = {}
            for name, path in self._paths():
                try:
                    with open(path, "rb") as f:
                        data[name] = f.read()
                except OSError as exc:
                    raise ValueError(f"{self.key}.{name}: cannot read {path}: {exc.strerror}") from None
                if b"-----BEGIN" not in data[name]:
                    raise ValueError(f"{self.key}.{name}: {path} holds no PEM block")
            material = _Material(data["cert_file"], data["key_file"], data.get("client_ca_file"), stamp)
            context = self._ssl_context(material)
            if self._stamp() == stamp:
                break
        return material, context

    def _ssl_context(self, material: _Material) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.settings.cert_file, self.settings.key_file)
        except ssl.SSLError as exc:
            raise ValueError(
                f"{self.key}: cert_file and key_file do not form a key pair, or are not PEM: "
                f"{exc.reason or exc}"
            ) from None
        if material.client_ca is not None:
            try:
                ctx.load_verify_locations(cadata=material.client_ca.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
                raise ValueError(
                    f"{self.key}.client_ca_file: not a PEM CA certificate: {exc}"
                ) from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _reloaded(self) -> _Material | None:
        """A newer material when reloading is on, the interval has passed and the files changed."""
        if self.settings.reload_interval <= 0 or not self._recheck.due():
            return None
        with self._lock:
            if self._stamp() == self._material.stamp:
                return None
            try:
                material, context = self._load()
            except ValueError as exc:
                log.warning("%s: keeping the current certificate; the changed files do not load: %s",
                            self.key, exc)
                return None
            self._material, self._context = material, context
            log.info("%s: loaded the changed certificate files", self.key)
            return material

    # ------------------------------------------------------------------ servers

    @property
    def mutual(self) -> bool:
        return self._material.client_ca is not None

    def ssl_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for an asyncio/uvicorn server. With reloading on, every
        handshake first checks for changed files and moves to their context."""
        base = self._context
        if self.settings.reload_interval > 0:
            def on_hello(sslobj: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
                self._reloaded()
                if sslobj.context is not self._context:
                    sslobj.context = self._context

            base.sni_callback = on_hello
        return base

    def grpc_credentials(self) -> grpc.ServerCredentials:
        m = self._material
        if self.settings.reload_interval <= 0:
            return grpc.ssl_server_credentials(
                [(m.key, m.cert)], root_certificates=m.client_ca, require_client_auth=self.mutual
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            new = self._reloaded()
            if new is None:
                return None
            return grpc.ssl_server_certificate_configuration([(new.key, new.cert)], new.client_ca)

        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(m.key, m.cert)], m.client_ca),
            fetch, require_client_authentication=self.mutual,
        )


def pinned_client_context(settings: TLSServerSettings) -> ssl.SSLContext:
    """A client context for the collector's own tools (``lqo query``) reading the same config:
    it trusts exactly the server's certificate — the first PEM block of ``cert_file``, so the
    host name need not match — and, under mutual TLS, presents that same certificate, which
    works when ``client_ca_file`` signed it."""
    with open(settings.cert_file, encoding="ascii", errors="replace") as f:
        pem = f.read()
    end = pem.find("-----END CERTIFICATE-----")
    if end < 0:
        raise ValueError(f"{settings.cert_file} holds no PEM certificate")
    leaf = pem[pem.find("-----BEGIN CERTIFICATE-----"):end + len("-----END CERTIFICATE-----")]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=leaf)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the pinned leaf is the trust anchor
    ctx.check_hostname = False  # pinned to one certificate: stronger than a name check
    if settings.client_ca_file:
        ctx.load_cert_chain(settings.cert_file, settings.key_file)
    return ctx
