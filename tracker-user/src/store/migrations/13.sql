-- 13: each group of the roll-ups stored once (issue 14: at most 120 bytes a flow on disk).
--
-- Every device's figures were kept twice: under client 0 beside each device's own rows, which
-- sum to the same. Reports now sum the devices' rows (store/rollup.rs), as they already did
-- for packed days (migration 12).
-- (The column comments of migrations 9 and 10, which the schema keeps, still say 0 is all
-- devices: no row says so any more.)
DELETE FROM rollup_rows WHERE client = 0;
DELETE FROM dns_rollup_rows WHERE client = 0;

-- A packed day keeps no hour rows: its flows and DNS queries are packed too (migration 12) and
-- hold the same numbers, so a period that starts on a packed day reads that first part-day from
-- them (rollup::Period). The hour rows were most of the roll-up rows: a month of them.
DELETE FROM rollup_rows WHERE hours = 1 AND EXISTS (
    SELECT 1 FROM rollup_packed p
    WHERE p.source = rollup_rows.source AND p.dim = rollup_rows.dim AND p.client = rollup_rows.client
        AND p.start_hour = rollup_rows.start_hour - rollup_rows.start_hour % 24);
DELETE FROM dns_rollup_rows WHERE hours = 1 AND EXISTS (
    SELECT 1 FROM dns_rollup_packed p
    WHERE p.source = dns_rollup_rows.source AND p.client = dns_rollup_rows.client
        AND p.start_hour = dns_rollup_rows.start_hour - dns_rollup_rows.start_hour % 24);
