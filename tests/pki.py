"""Throwaway TLS material and secured collector configs for tests (``trustme`` CAs)."""

from __future__ import annotations

from pathlib import Path

import trustme


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM
    files in ``directory`` (created)."""
    directory.mkdir()
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.com")
    files = {
        "ca": directory / "ca.pem", "cert": directory / "tls.crt", "key": directory / "tls.key",
        "client_cert": directory / "client.crt", "client_key": directory / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


def secured(pki: dict[str, Path] | None, token_file: Path | None, mutual: bool = False,
            reload: str | None = None) -> dict:
    """Collector config overrides: TLS from ``pki`` and/or the bearertokenauth extension reading
    ``token_file``, on both OTLP protocols."""
    protocol: dict = {}
    if pki is not None:
        tls = {"cert_file": str(pki["cert"]), "key_file": str(pki["key"])}
        if mutual:
            tls["client_ca_file"] = str(pki["ca"])
        if reload:
            tls["reload_interval"] = reload
        protocol["tls"] = tls
    if token_file is not None:
        protocol["auth"] = {"authenticator": "bearertokenauth"}
    overrides: dict = {"receivers": {"otlp": {"protocols": {"grpc": dict(protocol), "http": dict(protocol)}}}}
    if token_file is not None:
        overrides["extensions"] = {"bearertokenauth": {"filename": str(token_file)}}
        overrides["service"] = {"extensions": ["bearertokenauth"]}
    return overrides
