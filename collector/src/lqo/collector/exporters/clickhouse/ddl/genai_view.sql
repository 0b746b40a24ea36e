-- Feeds the GenAI table from every insert into the spans table, whoever writes it (this
-- collector, or the OpenTelemetry Collector's ClickHouse exporter).
CREATE MATERIALIZED VIEW IF NOT EXISTS $database.$genai_view $on_cluster
TO $database.$genai_table
AS $select
