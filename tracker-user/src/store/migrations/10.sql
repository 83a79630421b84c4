    -- 10: closed days of the roll-ups packed (issue 14; store/packed.rs has the blobs' layout).
    -- The prune moves each day bucket's rows here once the day ended 48 hours ago: one blob a
    -- (dimension, device, day) instead of a row a group. The views `rollup` and `dns_rollup`
    -- show the rows only; `tracker report` reads both.
    CREATE TABLE rollup_packed (
        source      INTEGER NOT NULL,  -- sources.id
        dim         INTEGER NOT NULL,  -- as rollup_rows.dim
        client      INTEGER NOT NULL,  -- texts.id of the device's address; 0 for all devices
        start_hour  INTEGER NOT NULL,  -- the day's start, in hours since 1970-01-01 UTC
        groups      BLOB    NOT NULL,  -- the day's groups: k1..k3 as texts ids, their counts
        PRIMARY KEY (source, dim, client, start_hour)
    );
    CREATE TABLE dns_rollup_packed (
        source      INTEGER NOT NULL,
        client      INTEGER NOT NULL,  -- texts.id of the address; 0 for all devices
        start_hour  INTEGER NOT NULL,
        names       BLOB    NOT NULL,  -- the day's names: qname as texts id, queries, first and
                                       -- last query in ms after the day's start, client bits
        PRIMARY KEY (source, client, start_hour)
    );
