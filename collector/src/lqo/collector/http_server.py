"""Run an ASGI app with uvicorn on a background thread, with a clean stop; what its routes share."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time

import uvicorn
from fastapi import Request, Response
from starlette.types import ASGIApp


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": message}``, the error body of the collector's JSON routes."""
    return Response(json.dumps({"error": message}), status_code=status, media_type="application/json",
                    headers=headers)


def split_endpoint(endpoint: str, key: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port), with an error naming ``key``."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{key}: {endpoint!r} is not HOST:PORT (e.g. 127.0.0.1:4318)")
    return host.strip("[]"), int(port)


def join_endpoint(host: str, port: int) -> str:
    """(host, port) → ``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ThreadedServer:
    def __init__(self, app: ASGIApp, host: str, port: int, name: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise OSError(f"cannot listen for {name} on {host}:{port}: {exc.strerror}") from None
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=30, server_header=False, h11_max_incomplete_event_size=64 * 1024,
            ssl_context_factory=None if ssl_context is None else lambda _config, _default: ssl_context,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"lqo-{name}",
            daemon=True,
        )

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start within {timeout}s")
            time.sleep(0.01)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()
