-- 12: raw flows of closed days packed (issue 14; store/packed_flows.rs has the blob's layout).
-- The prune moves a device's flows whose last packet fell on a day here once that day ended
-- 48 hours ago: one compressed blob a (device, day) instead of a row and five index entries a
-- flow. tracker's connections read them through a TEMP view `flows` of rows and packed flows
-- (store/packed_view.rs); this database's own view `flows` shows the rows only.
CREATE TABLE flow_packed (
    source     INTEGER NOT NULL,  -- sources.id
    client     INTEGER NOT NULL,  -- texts.id of the device's address
    day        INTEGER NOT NULL,  -- the day's start, ms since 1970-01-01 UTC
    flows      INTEGER NOT NULL,  -- flows in the blob
    min_id     INTEGER NOT NULL,  -- their smallest and largest id and first_seen, so a reader
    max_id     INTEGER NOT NULL,  -- unpacks only the days its query can match
    min_first  INTEGER NOT NULL,
    max_first  INTEGER NOT NULL,
    min_last   INTEGER NOT NULL,  -- and last_seen
    max_last   INTEGER NOT NULL,
    rows       BLOB    NOT NULL,  -- the flows, as columns, compressed
    PRIMARY KEY (source, client, day)
);
-- A reader finds its days by the bounds without reading the blobs they sit beside.
CREATE INDEX flow_packed_bounds ON flow_packed
    (source, client, day, min_id, max_id, min_first, max_first, min_last, max_last, flows);

-- A closed day's every-device roll-up is the sum of its devices' (the writer adds each flow and
-- query to both): packed, only the devices' blobs are kept, and reports sum them.
DELETE FROM rollup_packed WHERE client = 0;
DELETE FROM dns_rollup_packed WHERE client = 0;

-- The DNS log of closed days packed the same way (store/packed_dns.rs): a device's queries of a
-- day with their answers, one blob; the views `dns_queries` and `dns_answers` of tracker's
-- connections read both.
CREATE TABLE dns_packed (
    source     INTEGER NOT NULL,
    client     INTEGER NOT NULL,  -- texts.id of the device's address
    day        INTEGER NOT NULL,  -- the day's start, ms since 1970-01-01 UTC
    queries    INTEGER NOT NULL,  -- queries in the blob
    min_id     INTEGER NOT NULL,  -- their smallest and largest id and ts
    max_id     INTEGER NOT NULL,
    min_ts     INTEGER NOT NULL,
    max_ts     INTEGER NOT NULL,
    rows       BLOB    NOT NULL,  -- the queries and their answers, as columns, compressed
    PRIMARY KEY (source, client, day)
);
CREATE INDEX dns_packed_bounds ON dns_packed (source, client, day, min_id, max_id, min_ts, max_ts, queries);
