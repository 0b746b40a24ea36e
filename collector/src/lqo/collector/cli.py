"""``lqo collector``, ``schema``, ``report``, ``erase`` and ``query``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from lqo.collector.config import ConfigError, default_config, load_file

if TYPE_CHECKING:
    from lqo.collector.service import BuiltConfig

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _load(path: str | None) -> dict[str, Any]:
    return load_file(path) if path else default_config()


def _collector(args: argparse.Namespace) -> int:
    from lqo.collector.exporters.clickhouse.backends import StoreError
    from lqo.collector.service import Collector, validate_config

    built = validate_config(_load(args.config))
    if args.validate:
        print("config is valid")
        return 0
    logging.basicConfig(
        level=built.service.telemetry.logs.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        collector = Collector(built)
        collector.run_until_signal()
    except ConfigError:
        raise
    except (StoreError, OSError, TimeoutError) as exc:
        print(f"lqo collector: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def _via_collector(built: BuiltConfig, path: str, payload: dict[str, Any], command: str,
                   timeout: float = 60) -> bytes | None:
    """POST ``payload`` to a running collector's ``path`` (``/api/v1/…``: the collector holds the
    embedded store); None if none is running. Over TLS and with the token when the collector's
    HTTP server asks for them (both from the config)."""
    from lqo.collector.extensions.bearertokenauth import BearerTokenAuthConfig, client_header
    from lqo.collector.http_server import join_endpoint, split_endpoint
    from lqo.collector.tls import pinned_client_context

    for receiver_id, receiver in built.components["receivers"].items():
        http = getattr(getattr(receiver, "protocols", None), "http", None)
        if http is None:
            continue
        host, port = split_endpoint(http.endpoint, "endpoint")
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        headers = {"Content-Type": "application/json"}
        key = f"receivers.{receiver_id}.protocols.http"
        try:
            context = pinned_client_context(http.tls) if http.tls else None
            reference = http.query_auth or http.auth  # what guards /api/v1/query
            if reference is not None:
                auth = built.components["extensions"][reference.authenticator]
                if not isinstance(auth, BearerTokenAuthConfig):
                    raise QueryFailed(f"{key}: {command} can only send a bearertokenauth token")
                name, value = client_header(auth, f"extensions.{reference.authenticator}")
                headers[name] = value
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise QueryFailed(f"{key}: cannot prepare the request to the collector: {exc}") from None
        scheme = "https" if context else "http"
        request = urllib.request.Request(
            f"{scheme}://{join_endpoint(host, port)}{path}",
            data=json.dumps(payload).encode(),
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            raise QueryFailed(detail) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise QueryFailed(f"TLS with the collector on {host}:{port} failed: {exc.reason}") from None
            continue
        except (ConnectionError, TimeoutError):
            continue
    return None


class QueryFailed(Exception):
    pass


def _stores(built: BuiltConfig, command: str) -> dict[str, Any]:
    """The configured clickhouse exporters by id (the first is the one read)."""
    stores = {cid: c for cid, c in built.components["exporters"].items() if cid.split("/")[0] == "clickhouse"}
    if not stores:
        raise ConfigError(f"service.pipelines.traces.exporters: no clickhouse exporter for lqo {command}")
    return stores


def _print_read(built: BuiltConfig, sql: str, fmt: str, command: str, empty: str = "") -> int:
    """A read-only query of the configured store, its answer on stdout: through the running
    collector that holds an embedded store, else straight to it (a server, or an embedded store
    no collector holds). ``empty``: said on stderr when a table answer has no rows."""
    from lqo.collector.exporters.clickhouse.backends import StoreError
    from lqo.collector.query import QueryRefused, check_read_only, run_query

    store = next(iter(_stores(built, command).values()))
    try:
        sql = check_read_only(sql)
        output, _ = _on_store(built, store, "/api/v1/query", {"sql": sql, "format": fmt}, f"lqo {command}",
                              lambda backend: run_query(backend, sql, fmt))
    except (QueryRefused, StoreError, QueryFailed) as exc:
        print(f"lqo {command}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    sys.stdout.buffer.write(output)
    sys.stdout.flush()
    if empty and fmt == "table" and not output.strip():
        print(f"lqo {command}: {empty}", file=sys.stderr)
    return 0


def _on_store(built: BuiltConfig, store: Any, path: str, payload: dict[str, Any], command: str,
              run: Any, timeout: float | None = None) -> tuple[Any, bool]:
    """(the answer, whether the collector gave it): through the running collector (``path``),
    which holds an embedded store, else ``run(backend)`` straight on the store (a server, or an
    embedded store no collector holds). ``timeout``: for a long operation, instead of the store's."""
    from lqo.collector.exporters.clickhouse.backends import open_backend

    if store.endpoint.startswith("embedded://"):
        answer = _via_collector(built, path, payload, command, timeout or 60)
        if answer is not None:
            return answer, True
        directory = os.path.abspath(store.endpoint.removeprefix("embedded://"))
        if not os.path.isdir(directory):  # read where nothing was stored: say so, and make no store there
            raise QueryFailed(
                f"no store at {directory}, and no collector that holds one answered: run {command} "
                "where the collector runs (a relative embedded:// path is read from the working "
                "directory) or with its --config")
    backend = open_backend(store.endpoint, store.resolved_username(), store.resolved_password(),
                           max(store.timeout, timeout or 0))
    try:
        return run(backend), False
    finally:
        backend.close()


def _query(args: argparse.Namespace) -> int:
    from lqo.collector.service import validate_config

    return _print_read(validate_config(_load(args.config)), args.sql, args.format, "query")


def _report(args: argparse.Namespace) -> int:
    from lqo.collector.config import parse_duration
    from lqo.collector.report import evaluations_sql, report_sql
    from lqo.collector.service import validate_config

    built = validate_config(_load(args.config))
    cid, store = next(iter(_stores(built, "report").items()))
    if not store.genai_tables:
        raise ConfigError(f"exporters.{cid}.genai_tables: false; lqo report reads the GenAI roll-ups "
                          "(set it to true, or ask the spans with lqo query)")
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    if args.top < 1:
        raise ConfigError("--top: at least 1")
    sql = (evaluations_sql if args.evaluations else report_sql)(store.schema(), since, args.by, args.top)
    what = "evaluation results" if args.evaluations else "GenAI calls"
    return _print_read(built, sql, args.format, "report", f"no {what} stored in the last {args.since}")


def _erase(args: argparse.Namespace) -> int:
    from lqo.collector.erase import EraseRefused, Selector, erase, outcome_text
    from lqo.collector.exporters.clickhouse.backends import StoreError
    from lqo.collector.service import validate_config

    kind, value = next((k, v) for k in ("user", "conversation", "trace") if (v := getattr(args, k)) is not None)
    try:
        selector = Selector(kind, value)
    except EraseRefused as exc:
        raise ConfigError(f"--{kind}: {exc}") from None
    built = validate_config(_load(args.config))
    store = next(iter(_stores(built, "erase").values()))
    try:
        answer, remote = _on_store(built, store, "/api/v1/erase", {kind: selector.value, "confirm": args.yes},
                                   "lqo erase", lambda backend: erase(backend, store.schema(), selector, args.yes),
                                   timeout=3600)
        outcome = json.loads(answer) if remote else vars(answer)
    except (StoreError, QueryFailed) as exc:
        print(f"lqo erase: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(json.dumps(outcome) if args.format == "json" else outcome_text(outcome))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from lqo.collector.service import validate_config

    built = validate_config(_load(args.config))
    for cid, store in _stores(built, "schema").items():
        print(f"-- exporters.{cid}: {store.endpoint}")
        schema = store.schema()
        if args.backfill:
            if not schema.genai:
                raise ConfigError(f"exporters.{cid}.genai_tables: false, so there is nothing to backfill")
            print("-- copies the GenAI spans stored before the GenAI tables existed into them;"
                  " safe to run while spans arrive, and again")
            print(schema.backfill_statement() + ";\n")
            continue
        for statement in schema.statements():
            print(statement + ";\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from lqo.collector.version import __version__

    parser = argparse.ArgumentParser(prog="lqo", description="LLM Quality Observer")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    col = sub.add_parser("collector", help="run the collector (OTLP in, ClickHouse out)")
    col.add_argument("--config", help="YAML config (default: built-in, embedded store in ./.lqo)")
    col.add_argument("--validate", action="store_true", help="check the config and exit")
    col.set_defaults(func=_collector)

    sc = sub.add_parser("schema", help="print the DDL the clickhouse exporter(s) would run")
    sc.add_argument("--config", help="the collector's YAML config (default: built-in)")
    sc.add_argument("--backfill", action="store_true",
                    help="print the statement that fills the GenAI tables from spans stored before them")
    sc.set_defaults(func=_schema)

    rp = sub.add_parser("report", help="the GenAI calls of a recent window: calls, failures, latency, "
                                       "tokens, spend and flags by service and model")
    rp.add_argument("--since", default="24h", help="the window: 90m, 24h, 7d… (default 24h)")
    rp.add_argument("--by", choices=("model", "service", "provider", "request_model", "user", "conversation"),
                    default="model", help="rows per service+provider+model (default), per service, provider or "
                    "model; per end user (user.id) or conversation (gen_ai.conversation.id), read from the calls")
    rp.add_argument("--top", type=int, default=50, help="at most this many rows, largest spend first")
    rp.add_argument("--evaluations", action="store_true",
                    help="the evaluation results producers sent (users' feedback, evaluators' scores) per "
                         "evaluation and --by key instead: count, mean and lowest score, labels")
    rp.add_argument("--config", help="the collector's YAML config (default: built-in)")
    rp.add_argument("--format", choices=("table", "json", "csv", "tsv"), default="table")
    rp.set_defaults(func=_report)

    er = sub.add_parser("erase", help="erase every stored trace that names a user or conversation "
                                      "(a data-subject request); counts only, without --yes")
    who = er.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the traces with a span whose user.id or enduser.id is this")
    who.add_argument("--conversation", help="… whose gen_ai.conversation.id or session.id is this")
    who.add_argument("--trace", help="one trace, by its 32-hex-digit id")
    er.add_argument("--yes", action="store_true", help="erase them (without it: only count them)")
    er.add_argument("--config", help="the collector's YAML config (default: built-in)")
    er.add_argument("--format", choices=("text", "json"), default="text")
    er.set_defaults(func=_erase)

    q = sub.add_parser("query", help="run a read-only SQL query against the configured store")
    q.add_argument("sql", help='e.g. "SELECT SpanName, count() FROM otel_traces GROUP BY 1"')
    q.add_argument("--config", help="the collector's YAML config (default: built-in)")
    q.add_argument("--format", choices=("table", "json", "csv", "tsv"), default="table")
    q.set_defaults(func=_query)
    return parser


def main(argv: list[str] | None = None) -> int:
    # gRPC's core logs every failed TLS handshake at info level (a port scan or a plain-text
    # client would flood the log); errors only, unless the user asks for more.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"lqo: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
