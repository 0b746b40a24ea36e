-- A materialized view feeding $mv_target from every insert into the table its SELECT reads
-- (the spans table for the GenAI calls, whoever writes it; the calls table for the roll-ups).
-- Its comment names the SELECT's version: a collector whose SELECT differs brings the view up
-- to date at start (ALTER … MODIFY QUERY), after adding any new columns to $mv_target.
CREATE MATERIALIZED VIEW IF NOT EXISTS $database.$mv $on_cluster
TO $database.$mv_target
AS $select
