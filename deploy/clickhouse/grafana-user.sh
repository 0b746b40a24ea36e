#!/bin/bash
# A read-only ClickHouse user for Grafana (the image runs this once, on a new data volume);
# readonly = 2: no writes, but the plugin may set query settings.
# The collector writes as `lqo`; Grafana only reads, and never the system tables' secrets.
set -euo pipefail
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_GRAFANA_PASSWORD}'
  SETTINGS readonly = 2;
GRANT SELECT ON default.* TO grafana;
SQL
