"""Receiver security: TLS (and mutual TLS) on OTLP/gRPC and OTLP/HTTP, certificate reload, and
the ``bearertokenauth`` extension guarding both transports and the HTTP APIs beside OTLP.

Clients are the real OTel SDK exporters, grpcio and urllib over real sockets, against a
collector subprocess; certificates come from ``trustme``'s throwaway CAs."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import LQO, ROOT
from cryptography import x509
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from pki import make_pki, secured

from lqo.collector.components import ComponentContext
from lqo.collector.config import ConfigError, load_yaml
from lqo.collector.extensions.bearertokenauth import BearerTokenAuth, BearerTokenAuthConfig
from lqo.collector.service import validate_config
from lqo.collector.telemetry import SelfTelemetry

TOKEN = "s3cr3t-token-a1b2c3"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch):
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on this machine) override a session's
    # `verify`, so the OTLP/HTTP exporter would ignore its certificate_file (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def _send(exporter, service: str, n: int = 2) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("lqo.tests")
    for i in range(n):
        with tracer.start_as_current_span(f"chat gpt-4o {i}") as span:
            span.set_attribute("gen_ai.request.model", "gpt-4o")
    provider.shutdown()


def _export_result(exporter) -> SpanExportResult:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    results: list[SpanExportResult] = []
    original = exporter.export

    def recording(spans):
        results.append(original(spans))
        return results[-1]

    exporter.export = recording
    with provider.get_tracer("t").start_as_current_span("refused"):
        pass
    provider.shutdown()
    return results[0]


def _https(url: str, ca: Path | None, body: bytes | None = None, headers: dict | None = None,
           client: tuple[Path, Path] | None = None):
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    if ctx is not None and client:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    request = urllib.request.Request(url, data=body, headers=headers or {})
    return urllib.request.urlopen(request, timeout=10, context=ctx)


def _grpc_export(endpoint: str, credentials: grpc.ChannelCredentials | None,
                 metadata: tuple = ()) -> grpc.StatusCode:
    channel = (grpc.secure_channel(endpoint, credentials) if credentials
               else grpc.insecure_channel(endpoint))
    with channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        try:
            call(ExportTraceServiceRequest().SerializeToString(), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --------------------------------------------------------------------------- TLS + bearer token


def test_tls_and_token_let_sdk_exporters_in_and_keep_everyone_else_out(make_collector, tmp_path):
    pki = make_pki(tmp_path / "pki")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    col = make_collector(secured(pki, token_file))
    grpc_url = f"https://127.0.0.1:{col.grpc_port}"
    http_url = f"https://127.0.0.1:{col.http_port}"
    ca_pem = pki["ca"].read_bytes()
    auth = {"authorization": f"Bearer {TOKEN}"}

    # The SDK exporters, configured as a user would (CA file, headers), get in.
    _send(GrpcExporter(endpoint=grpc_url, credentials=grpc.ssl_channel_credentials(ca_pem),
                       headers=tuple(auth.items())), "over-grpc", 2)
    _send(HttpExporter(endpoint=f"{http_url}/v1/traces", certificate_file=str(pki["ca"]),
                       headers=auth), "over-http", 3)
    assert col.wait_stored(5) == 5
    # `lqo query` reaches the collector over TLS with the token, both read from the same config.
    rows = col.query("SELECT ServiceName, count() AS n FROM otel_traces GROUP BY 1 ORDER BY 1")
    assert rows == [{"ServiceName": "over-grpc", "n": 2}, {"ServiceName": "over-http", "n": 3}]

    # No token, a wrong token, a wrong scheme: refused on both transports, before the body is read.
    for headers in ((), (("authorization", "Bearer wrong"),), (("authorization", f"Basic {TOKEN}"),)):
        exporter = GrpcExporter(endpoint=grpc_url, credentials=grpc.ssl_channel_credentials(ca_pem),
                                headers=headers)
        assert _export_result(exporter) is SpanExportResult.FAILURE
        assert _grpc_export(col.grpc_endpoint, grpc.ssl_channel_credentials(ca_pem),
                            headers) is grpc.StatusCode.UNAUTHENTICATED
    body = ExportTraceServiceRequest().SerializeToString()
    with pytest.raises(urllib.error.HTTPError) as refused:
        _https(f"{http_url}/v1/traces", pki["ca"], body,
               {"Content-Type": "application/x-protobuf", "Authorization": "Bearer wrong"})
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == "Bearer"
    status = status_pb2.Status.FromString(refused.value.read())  # OTLP/HTTP: a Status body
    assert status.code == 16 and "authorization" in status.message
    # The APIs beside OTLP on the same server are guarded too.
    for path, payload in (("/api/v1/query", {"sql": "SELECT 1"}),
                          ("/v1/evaluate", {"output": "hello"})):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _https(f"{http_url}{path}", pki["ca"], json.dumps(payload).encode(),
                   {"Content-Type": "application/json"})
        assert refused.value.code == 401
        assert "credentials" in json.loads(refused.value.read())["error"]
    with _https(f"{http_url}/api/v1/query", pki["ca"],
                json.dumps({"sql": "SELECT count() AS n FROM otel_traces"}).encode(),
                {"Content-Type": "application/json", "Authorization": f"bearer {TOKEN}"}) as ok:
        assert json.loads(ok.read().decode().splitlines()[0]) == {"n": 5}

    # Plain text to a TLS port gets nowhere.
    assert _grpc_export(col.grpc_endpoint, None, tuple(auth.items())) is grpc.StatusCode.UNAVAILABLE
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{col.http_port}/v1/traces", timeout=5)

    metrics = col.metrics()
    assert _metric(metrics, "lqo_receiver_refused_requests_total", transport="grpc",
                   reason="unauthenticated") == 6
    assert _metric(metrics, "lqo_receiver_refused_requests_total", transport="http",
                   reason="unauthenticated") == 3
    assert col.wait_stored(5) == 5  # nothing refused was stored
    log = col.log()
    assert "refused" in log and "unauthenticated" in log
    assert TOKEN not in log


def test_a_rotated_token_file_takes_effect_without_a_restart(make_collector, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    col = make_collector(secured(None, token_file))
    url = f"{col.http_url}/v1/traces"

    def status(token: str) -> int:
        request = urllib.request.Request(url, data=b"", headers={
            "Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status(TOKEN) == 200 and status("next-token") == 401
    # During a rotation both tokens are listed; afterwards only the new one.
    token_file.write_text(f"{TOKEN}\nnext-token\n")
    deadline = time.monotonic() + 10
    while status("next-token") != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status("next-token") == 200 and status(TOKEN) == 200
    token_file.write_text("next-token\n")
    deadline = time.monotonic() + 10
    while status(TOKEN) != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(TOKEN) == 401 and status("next-token") == 200
    # A file emptied or removed mid-rotation keeps the tokens the collector has.
    token_file.unlink()
    time.sleep(1.5)
    assert status("next-token") == 200
    assert "keeping the current tokens" in col.log()
    assert TOKEN not in col.log() and "next-token" not in col.log()


# --------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_requires_a_client_certificate_the_ca_signed(make_collector, tmp_path):
    pki = make_pki(tmp_path / "pki")
    stranger = make_pki(tmp_path / "stranger")  # a client certificate from another CA
    col = make_collector(secured(pki, None, mutual=True))
    ca = pki["ca"].read_bytes()
    http_url = f"https://127.0.0.1:{col.http_port}/v1/traces"

    _send(GrpcExporter(endpoint=f"https://{col.grpc_endpoint}", credentials=grpc.ssl_channel_credentials(
        ca, pki["client_key"].read_bytes(), pki["client_cert"].read_bytes())), "mtls-grpc", 1)
    _send(HttpExporter(endpoint=http_url, certificate_file=str(pki["ca"]),
                       client_certificate_file=str(pki["client_cert"]),
                       client_key_file=str(pki["client_key"])), "mtls-http", 1)
    assert col.wait_stored(2) == 2

    assert _grpc_export(col.grpc_endpoint, grpc.ssl_channel_credentials(ca)) is grpc.StatusCode.UNAVAILABLE
    assert _grpc_export(col.grpc_endpoint, grpc.ssl_channel_credentials(
        ca, stranger["client_key"].read_bytes(), stranger["client_cert"].read_bytes()),
    ) is grpc.StatusCode.UNAVAILABLE
    body = ExportTraceServiceRequest().SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    for client in (None, (stranger["client_cert"], stranger["client_key"])):
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            _https(http_url, pki["ca"], body, headers, client).read()
    with _https(http_url, pki["ca"], body, headers, (pki["client_cert"], pki["client_key"])) as ok:
        assert ok.status == 200
    # `lqo query` presents the server's certificate, which the same CA signed.
    assert col.query("SELECT count() AS n FROM otel_traces") == [{"n": 2}]


# --------------------------------------------------------------------------- certificate reload


def _served_issuer(port: int) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def test_rotated_certificates_are_served_to_new_connections(make_collector, tmp_path):
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    live = make_pki(tmp_path / "live")  # the files the collector reads; rotated in place below
    for name in ("cert", "key"):
        live[name].write_bytes(old[name].read_bytes())
    col = make_collector(secured(live, None, reload="100ms"))
    old_issuer = _served_issuer(col.http_port)

    def grpc_ok(ca: Path) -> bool:
        return _grpc_export(col.grpc_endpoint, grpc.ssl_channel_credentials(ca.read_bytes())) \
            is grpc.StatusCode.OK

    assert grpc_ok(old["ca"]) and not grpc_ok(new["ca"])
    # A half-written rotation (a key that does not match) is refused; the old pair stays served.
    live["cert"].write_bytes(new["cert"].read_bytes())
    time.sleep(0.3)
    assert _served_issuer(col.http_port) == old_issuer and grpc_ok(old["ca"])
    assert "keeping the current certificate" in col.log()
    live["key"].write_bytes(new["key"].read_bytes())
    deadline = time.monotonic() + 10
    while _served_issuer(col.http_port) == old_issuer and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _served_issuer(col.http_port) != old_issuer
    deadline = time.monotonic() + 10
    while not grpc_ok(new["ca"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert grpc_ok(new["ca"]) and not grpc_ok(old["ca"])
    with _https(f"https://127.0.0.1:{col.http_port}/v1/traces", new["ca"],
                ExportTraceServiceRequest().SerializeToString(),
                {"Content-Type": "application/x-protobuf"}) as ok:
        assert ok.status == 200


# --------------------------------------------------------------------------- config and start errors

BASE = """
extensions:
  bearertokenauth:
    token: {token}
receivers:
  otlp:
    protocols:
      grpc:
        auth: {{authenticator: bearertokenauth}}
exporters:
  clickhouse:
    endpoint: embedded://x
service:
  extensions: [bearertokenauth]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [clickhouse]
"""


def _validate(text: str):
    return validate_config(load_yaml(text, "test.yaml", {}))


def test_valid_auth_config_and_its_reference_check():
    built = _validate(BASE.format(token=TOKEN))
    assert built.components["extensions"]["bearertokenauth"].token.get_secret_value() == TOKEN
    assert TOKEN not in repr(built)
    with pytest.raises(ConfigError, match=r"receivers\.otlp\.protocols\.grpc\.auth\.authenticator: "
                       r"'bearertokenauth' is not an extension the service runs.*listed: none"):
        _validate(BASE.format(token=TOKEN).replace("  extensions: [bearertokenauth]\n", ""))


def test_an_extension_of_the_wrong_kind_is_refused_by_validate():
    """--validate, not only the start, checks that each setting names the right kind of
    extension: an authenticator for auth, a storage for a sending queue."""
    text = BASE.format(token=TOKEN).replace("  extensions: [bearertokenauth]\n",
                                            "  extensions: [bearertokenauth, file_storage]\n")
    text = text.replace("extensions:\n", "extensions:\n  file_storage: {directory: ./q}\n", 1)
    _validate(text)
    with pytest.raises(ConfigError, match=r"receivers\.otlp\.protocols\.grpc\.auth\.authenticator: "
                       r"'file_storage' is not an authenticator; name an extension of type bearertokenauth"):
        _validate(text.replace("authenticator: bearertokenauth", "authenticator: file_storage"))
    with pytest.raises(ConfigError, match=r"exporters\.clickhouse\.sending_queue\.storage: "
                       r"'bearertokenauth' is not a storage; name an extension of type file_storage"):
        _validate(text.replace("    endpoint: embedded://x\n",
                               "    endpoint: embedded://x\n    sending_queue: {storage: bearertokenauth}\n"))


@pytest.mark.parametrize("token_yaml,expected", [
    ('"has space"', "extensions.bearertokenauth.token: a token must be non-empty printable ASCII"),
    ('""', "extensions.bearertokenauth.token: a token must be non-empty"),
    ("null\n    filename: /x", "extensions.bearertokenauth: set exactly one of token, tokens or filename (none set)"),
    ("abc\n    filename: /x", "set exactly one of token, tokens or filename (token and filename set)"),
    ("abc\n    scheme: 'Bad Scheme'", "extensions.bearertokenauth.scheme: String should match pattern"),
])
def test_bad_token_settings_are_named_and_never_echoed(token_yaml, expected):
    text = BASE.format(token=token_yaml)
    if "null" in token_yaml:
        text = text.replace("    token: null\n    filename: /x\n", "    scheme: Bearer\n")
    with pytest.raises(ConfigError) as err:
        _validate(text)
    assert expected in str(err.value)
    assert "has space" not in str(err.value) and "abc" not in str(err.value)


def test_tls_settings_are_checked_at_start_with_the_key_named(tmp_path):
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other")
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    cases = [
        ({"cert_file": str(tmp_path / "missing.crt"), "key_file": str(pki["key"])},
         "receivers.otlp.protocols.http.tls.cert_file: cannot read"),
        ({"cert_file": str(empty), "key_file": str(pki["key"])},
         "receivers.otlp.protocols.http.tls.cert_file: " + str(empty) + " holds no PEM block"),
        ({"cert_file": str(pki["cert"]), "key_file": str(other["key"])},
         "receivers.otlp.protocols.http.tls: cert_file and key_file do not form a key pair"),
        ({"cert_file": str(pki["cert"]), "key_file": str(pki["key"]), "client_ca_file": str(empty)},
         "receivers.otlp.protocols.http.tls.client_ca_file: " + str(empty) + " holds no PEM block"),
        ({"cert_file": str(pki["cert"])}, "receivers.otlp.protocols.http.tls.key_file: required"),
    ]
    for tls, expected in cases:
        config = tmp_path / "lqo.yaml"
        config.write_text(json.dumps({
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0", "tls": tls}}}},
            "exporters": {"clickhouse": {"endpoint": f"embedded://{tmp_path / 'store'}"}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["clickhouse"]}},
                        "telemetry": {"metrics": {"address": "127.0.0.1:0"}}},
        }))
        out = subprocess.run([LQO, "collector", "--config", str(config)], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert expected in out.stderr


def test_a_missing_token_file_stops_the_start(tmp_path):
    config = tmp_path / "lqo.yaml"
    config.write_text(BASE.format(token="x").replace(
        "    token: x\n", f"    filename: {tmp_path / 'nope'}\n").replace(
        "embedded://x", f"embedded://{tmp_path / 'store'}").replace(
        "      grpc:\n", "      grpc:\n        endpoint: 127.0.0.1:0\n")
        + "  telemetry:\n    metrics:\n      address: 127.0.0.1:0\n")
    out = subprocess.run([LQO, "collector", "--config", str(config)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"extensions.bearertokenauth.filename: cannot read {tmp_path / 'nope'}" in out.stderr


# --------------------------------------------------------------------------- the authenticator


def _auth(**settings) -> BearerTokenAuth:
    auth = BearerTokenAuth(BearerTokenAuthConfig(**settings),
                           ComponentContext("bearertokenauth", SelfTelemetry()))
    auth.start()
    return auth


def test_bearer_token_matching():
    auth = _auth(tokens=["one", "two"])
    assert auth.header == "authorization" and auth.challenge == "Bearer"
    assert auth.authenticate("Bearer one") and auth.authenticate("bearer two")
    assert auth.authenticate(b"BEARER  one")  # gRPC metadata may arrive as bytes
    for refused in (None, "", "one", "Bearer", "Bearer ", "Bearer on", "Bearer one1",
                    "Bearer one two", "Basic one", "Bearerone", "Bearer\u00e9one"):
        assert not auth.authenticate(refused), refused
    raw = _auth(token="k-1", scheme="", header="X-Api-Key")
    assert raw.header == "x-api-key"
    assert raw.authenticate("k-1") and not raw.authenticate("Bearer k-1")


def test_token_file_format(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("\n  alpha \n\nbeta\n")
    auth = _auth(filename=str(path))
    assert auth.authenticate("Bearer alpha") and auth.authenticate("Bearer beta")
    path.write_text("has space inside\n")
    with pytest.raises(ValueError, match=r"line 1 of .* is not a token") as err:
        _auth(filename=str(path))
    assert "space inside" not in str(err.value)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no token"):
        _auth(filename=str(path))


def test_the_reference_config_in_the_docs_is_valid():
    """docs/configuration.md's reference block, receivers' tls and auth included, passes the checks."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    reference = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    built = _validate(reference)
    http = built.components["receivers"]["otlp"].protocols.http
    assert http.auth.authenticator == "bearertokenauth" and http.tls.cert_file == "/certs/tls.crt"
    assert built.components["extensions"]["bearertokenauth"].filename == "/etc/lqo/token"


def test_hostile_credentials_are_refused_without_harm(make_collector, tmp_path):
    """Oversized, repeated, binary and non-ASCII credentials: refused (or the request rejected as
    malformed), never let in, and the collector keeps serving the right token."""
    import http.client

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    col = make_collector(secured(None, token_file))

    def post(headers: list[tuple[str, str | bytes]]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", col.http_port, timeout=10)
        try:
            conn.putrequest("POST", "/v1/traces")
            conn.putheader("Content-Type", "application/x-protobuf")
            conn.putheader("Content-Length", "0")
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            return conn.getresponse().status
        finally:
            conn.close()

    hostile = [
        [("Authorization", "Bearer " + "x" * 70_000)],  # past the 64 KiB header limit
        [("Authorization", "Bearer " + "x" * 30_000)],
        [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")],  # two of them
        [("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")],
        [("Authorization", b"Bearer \xff\xfe" + TOKEN.encode())],
        [("Authorization", "Bearer " + TOKEN + "\u00e9".encode("latin-1").decode("latin-1"))],
        [("Authorization", f"Bearer\t{TOKEN}x")],
    ]
    for headers in hostile:
        try:
            status = post(headers)
        except ConnectionError:
            continue  # the server dropped a request it could not parse: also a refusal
        assert status in (400, 401, 431), (headers[0][1][:20], status)
    assert post([("Authorization", f"Bearer {TOKEN}")]) == 200

    for metadata in ((("authorization", "Bearer " + "x" * 20_000),),
                     (("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer other")),
                     (("authorization-bin", TOKEN.encode()),)):
        assert _grpc_export(col.grpc_endpoint, None, metadata) in (
            grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
    assert _grpc_export(col.grpc_endpoint, None, (("authorization", f"Bearer {TOKEN}"),)) is grpc.StatusCode.OK
    assert "Traceback" not in col.log()


def test_a_query_token_of_its_own_keeps_senders_out_of_the_stored_data(make_collector, tmp_path):
    """query_auth: /api/v1/* (every stored prompt) takes only the readers' token; the token the
    applications send spans with opens OTLP and /v1/evaluate, not the stored data."""
    (tmp_path / "senders").write_text("sender-token\n")
    (tmp_path / "readers").write_text("reader-token\n")
    col = make_collector({
        "extensions": {"bearertokenauth/senders": {"filename": str(tmp_path / "senders")},
                       "bearertokenauth/readers": {"filename": str(tmp_path / "readers")}},
        "receivers": {"otlp": {"protocols": {
            "grpc": {"auth": {"authenticator": "bearertokenauth/senders"}},
            "http": {"auth": {"authenticator": "bearertokenauth/senders"},
                     "query_auth": {"authenticator": "bearertokenauth/readers"}}}}},
        "service": {"extensions": ["bearertokenauth/senders", "bearertokenauth/readers"]},
    })

    def status(path: str, token: str | None, body: bytes, content_type: str, url: str = col.http_url) -> int:
        headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}{path}", data=body,
                                                               headers=headers), timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    otlp = ExportTraceServiceRequest().SerializeToString()
    query = json.dumps({"sql": "SELECT count() FROM otel_traces"}).encode()
    evaluate = json.dumps({"output": "Paris is the capital of France."}).encode()
    assert status("/v1/traces", "sender-token", otlp, "application/x-protobuf") == 200
    assert status("/v1/traces", "reader-token", otlp, "application/x-protobuf") == 401
    assert status("/v1/evaluate", "sender-token", evaluate, "application/json") == 200
    assert status("/api/v1/query", "sender-token", query, "application/json") == 401
    assert status("/api/v1/query", None, query, "application/json") == 401
    assert status("/api/v1/query", "reader-token", query, "application/json") == 200
    erase = json.dumps({"user": "u-1"}).encode()  # erasing stored data: the readers' token too
    assert status("/api/v1/erase", "sender-token", erase, "application/json") == 401
    assert status("/api/v1/erase", None, erase, "application/json") == 401
    assert status("/api/v1/erase", "reader-token", erase, "application/json") == 200
    assert _grpc_export(col.grpc_endpoint, None, (("authorization", "Bearer sender-token"),)) is grpc.StatusCode.OK
    _send(HttpExporter(endpoint=f"{col.http_url}/v1/traces", headers={"authorization": "Bearer sender-token"}),
          "app", 2)
    assert col.wait_stored(2) == 2  # `lqo query` sends the readers' token from the config

    # query_auth alone: spans come in without a token, the stored data stays closed
    open_intake = make_collector({
        "extensions": {"bearertokenauth": {"filename": str(tmp_path / "readers")}},
        "receivers": {"otlp": {"protocols": {"http": {"query_auth": {"authenticator": "bearertokenauth"}}}}},
        "service": {"extensions": ["bearertokenauth"]},
    })
    url = open_intake.http_url
    assert status("/v1/traces", None, otlp, "application/x-protobuf", url) == 200
    assert status("/api/v1/query", None, query, "application/json", url) == 401
    assert status("/api/v1/query", "reader-token", query, "application/json", url) == 200


def test_the_docs_readers_token_example_is_valid():
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split("**A token of its own for the stored data.**", 1)[1]
    example = load_yaml(section.split("```yaml\n", 1)[1].split("```", 1)[0], "docs", {})
    example["exporters"] = {"clickhouse": {"endpoint": "embedded://x"}}
    example["service"]["pipelines"] = {"traces": {"receivers": ["otlp"], "exporters": ["clickhouse"]}}
    built = validate_config(example)
    http = built.components["receivers"]["otlp"].protocols.http
    assert (http.auth.authenticator, http.query_auth.authenticator) == (
        "bearertokenauth/senders", "bearertokenauth/readers")


def test_garbage_on_the_tls_ports_costs_nothing_and_floods_no_log(make_collector, tmp_path):
    """Plain HTTP, a truncated ClientHello, zeros, and clients that do not trust the certificate,
    on both TLS ports: the collector stays ready, serves a proper client next, and logs no line
    per failed handshake (gRPC's core would, at info level)."""
    pki = make_pki(tmp_path / "pki")
    col = make_collector(secured(pki, None))
    for port in (col.http_port, col.grpc_port):
        for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05junk", b"\x00" * 4096):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(payload)
                raw.settimeout(2)
                try:
                    raw.recv(1024)
                except (TimeoutError, ConnectionError):
                    pass
        with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1"):
            pass
    assert _grpc_export(col.grpc_endpoint, grpc.ssl_channel_credentials(pki["ca"].read_bytes())) is grpc.StatusCode.OK
    with _https(f"https://127.0.0.1:{col.http_port}/v1/traces", pki["ca"], ExportTraceServiceRequest().SerializeToString(),
                {"Content-Type": "application/x-protobuf"}) as ok:
        assert ok.status == 200
    log = col.log()
    assert "Handshake failed" not in log and "Traceback" not in log, log[-2000:]


def test_metrics_over_tls_with_a_token_and_a_real_prometheus_scraping_it(make_collector, daemons, tmp_path):
    """service.telemetry.metrics.tls and .auth: /metrics (which names services and models and
    counts their spend) answers only with the token, over TLS; the probes stay open; a real
    Prometheus scrapes it with its own authorization and tls_config."""
    from promstack import query, wait_until

    pki = make_pki(tmp_path / "pki")
    scrape = "scrape-t0ken-9z8y"
    c = make_collector({
        "extensions": {"bearertokenauth/scrape": {"token": scrape}},
        "service": {"extensions": ["bearertokenauth/scrape"], "telemetry": {"metrics": {
            "tls": {"cert_file": str(pki["cert"]), "key_file": str(pki["key"])},
            "auth": {"authenticator": "bearertokenauth/scrape"}}}},
    }, start=False)
    c.admin_ca = pki["ca"]
    c.start()
    base = f"https://127.0.0.1:{c.metrics_port}"
    for probe in ("/healthz", "/readyz"):
        with _https(base + probe, pki["ca"]) as response:
            assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        _https(base + "/metrics", pki["ca"])
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(urllib.error.HTTPError) as wrong:
        _https(base + "/metrics", pki["ca"], headers={"Authorization": "Bearer " + TOKEN})
    assert wrong.value.code == 401
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain text to the TLS port
        urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/healthz", timeout=5).read()
    with _https(base + "/metrics", pki["ca"], headers={"Authorization": f"Bearer {scrape}"}) as response:
        exposition = response.read().decode()
    assert ('lqo_receiver_refused_requests_total{reason="unauthenticated",receiver="service.telemetry",'
            'transport="http"} 2.0') in exposition

    job = {"scrape_interval": "1s", "static_configs": [{"targets": [f"127.0.0.1:{c.metrics_port}"]}],
           "scheme": "https", "tls_config": {"ca_file": str(pki["ca"])}}
    prom = daemons.prometheus(json.dumps({"scrape_configs": [
        {"job_name": "with-token", "authorization": {"credentials": scrape}, **job},
        {"job_name": "without", **job}]}))
    up = wait_until("both jobs scraped", lambda: {r["metric"]["job"]: r["value"][1] for r in query(prom, "up")}
                    if len(query(prom, "up")) == 2 else None)
    assert up == {"with-token": "1", "without": "0"}
    wait_until("the collector's series stored", lambda: query(prom, 'process_resident_memory_bytes{job="with-token"}'))
    assert "Traceback" not in c.log() and scrape not in c.log()


def test_metrics_auth_must_name_a_running_extension():
    raw = load_yaml("""
receivers: {otlp: {protocols: {http: {}}}}
exporters: {clickhouse: {}}
service:
  pipelines: {traces: {receivers: [otlp], exporters: [clickhouse]}}
  telemetry: {metrics: {auth: {authenticator: bearertokenauth}}}
""", "test")
    with pytest.raises(ConfigError, match=r"service\.telemetry\.metrics\.auth\.authenticator: 'bearertokenauth' is not"):
        validate_config(raw)
