    -- 9: compact roll-ups (issue 14). Their keys become numbers: the client, the group and the
    -- name are ids into `texts` (0 standing for '': all devices, or an unused key part), the
    -- dimension a small code, buckets whole hours. The views `rollup` and `dns_rollup` keep the
    -- names and columns of before, for people who query them.

    -- Flows by the UTC hour and day they started in (see migration 4), per client and, under
    -- client 0, for all devices together.
    CREATE TABLE rollup_rows (
        source       INTEGER NOT NULL,  -- sources.id
        dim          INTEGER NOT NULL,  -- 0 owner (k1 owner_kind, k2 owner), 1 service (k1),
                                        -- 2 served_by (k1), 3 protocol (k1 IP protocol number,
                                        -- k2 app_protocol, k3 encrypted)
        client       INTEGER NOT NULL,  -- texts.id of the device's address; 0 for all devices
        hours        INTEGER NOT NULL,  -- the bucket's length in hours: 1 or 24
        start_hour   INTEGER NOT NULL,  -- its start, in hours since 1970-01-01 UTC
        k1           INTEGER NOT NULL,  -- texts.id of each part of the group; 0 = none
        k2           INTEGER NOT NULL,
        k3           INTEGER NOT NULL,
        connections  INTEGER NOT NULL,  -- flows that started in the bucket (0 once all moved away)
        packets      INTEGER NOT NULL,  -- their packets, both ways
        bytes_up     INTEGER NOT NULL,
        bytes_down   INTEGER NOT NULL,
        PRIMARY KEY (source, dim, client, hours, start_hour, k1, k2, k3)
    ) WITHOUT ROWID;
    -- The DNS log by UTC hour and day, client (0 for all devices) and name.
    CREATE TABLE dns_rollup_rows (
        source       INTEGER NOT NULL,
        client       INTEGER NOT NULL,  -- texts.id of the address; 0 for all devices
        hours        INTEGER NOT NULL,  -- 1 or 24
        start_hour   INTEGER NOT NULL,  -- hours since 1970-01-01 UTC
        qname        INTEGER NOT NULL,  -- texts.id
        queries      INTEGER NOT NULL,
        first_ms     INTEGER NOT NULL,  -- the bucket's first and last query of the name, in ms
        last_ms      INTEGER NOT NULL,  -- after the bucket's start
        client_bits  INTEGER NOT NULL,  -- OR of the askers' bits (client_bits.bit): distinct clients
        PRIMARY KEY (source, client, hours, start_hour, qname)
    ) WITHOUT ROWID;

    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT client FROM rollup WHERE client != '';
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT k1 FROM rollup WHERE k1 != '';
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT k2 FROM rollup WHERE k2 != '';
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT k3 FROM rollup WHERE k3 != '';
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT client FROM dns_rollup WHERE client != '';
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT qname FROM dns_rollup WHERE qname != '';
    INSERT INTO rollup_rows SELECT
        r.source,
        CASE r.dim WHEN 'owner' THEN 0 WHEN 'service' THEN 1 WHEN 'served_by' THEN 2 ELSE 3 END,
        coalesce((SELECT id FROM texts WHERE text = r.client AND r.client != ''), 0),
        r.span / 3600000,
        r.bucket / 3600000,
        coalesce((SELECT id FROM texts WHERE text = r.k1 AND r.k1 != ''), 0),
        coalesce((SELECT id FROM texts WHERE text = r.k2 AND r.k2 != ''), 0),
        coalesce((SELECT id FROM texts WHERE text = r.k3 AND r.k3 != ''), 0),
        r.connections, r.packets, r.bytes_up, r.bytes_down
    FROM rollup r ORDER BY 1, 2, 3, 4, 5, 6, 7, 8;
    INSERT INTO dns_rollup_rows SELECT
        d.source,
        coalesce((SELECT id FROM texts WHERE text = d.client AND d.client != ''), 0),
        d.span / 3600000,
        d.bucket / 3600000,
        coalesce((SELECT id FROM texts WHERE text = d.qname AND d.qname != ''), 0),
        d.queries, d.first_ts - d.bucket, d.last_ts - d.bucket, d.client_bits
    FROM dns_rollup d ORDER BY 1, 2, 3, 4, 5;
    DROP TABLE rollup;
    DROP TABLE dns_rollup;

    -- The roll-ups as before this version: text keys ('' for all devices and unused parts),
    -- spans and buckets in unix ms.
    CREATE VIEW rollup AS SELECT
        r.source AS source,
        CASE r.dim WHEN 0 THEN 'owner' WHEN 1 THEN 'service' WHEN 2 THEN 'served_by' ELSE 'protocol' END AS dim,
        coalesce(c.text, '') AS client,
        r.hours * 3600000 AS span,
        r.start_hour * 3600000 AS bucket,
        coalesce(t1.text, '') AS k1,
        coalesce(t2.text, '') AS k2,
        coalesce(t3.text, '') AS k3,
        r.connections AS connections,
        r.packets AS packets,
        r.bytes_up AS bytes_up,
        r.bytes_down AS bytes_down
    FROM rollup_rows r
        LEFT JOIN texts c ON c.id = r.client
        LEFT JOIN texts t1 ON t1.id = r.k1
        LEFT JOIN texts t2 ON t2.id = r.k2
        LEFT JOIN texts t3 ON t3.id = r.k3;
    CREATE VIEW dns_rollup AS SELECT
        d.source AS source,
        coalesce(c.text, '') AS client,
        d.hours * 3600000 AS span,
        d.start_hour * 3600000 AS bucket,
        coalesce(n.text, '') AS qname,
        d.queries AS queries,
        d.start_hour * 3600000 + d.first_ms AS first_ts,
        d.start_hour * 3600000 + d.last_ms AS last_ts,
        d.client_bits AS client_bits
    FROM dns_rollup_rows d
        LEFT JOIN texts c ON c.id = d.client
        LEFT JOIN texts n ON n.id = d.qname;
