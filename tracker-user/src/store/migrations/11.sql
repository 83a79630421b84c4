    -- 11: a flow's identity found through an index of its kernel start time (issue 14).
    -- The unique index of the whole key (boot, kernel_first_ns, client, remote, protocol,
    -- ports) took 38 bytes a flow, more than any other; kernel_first_ns, the kernel's
    -- nanosecond clock at the flow's first packet, is all but unique by itself, and the writer
    -- compares the rest of the key on the rows it finds (store/mod.rs, `upsert_flows`): an
    -- index of 22 bytes a flow. Only
    -- the daemon writes live rows (its lock beside the database), an import its own source's,
    -- each in transactions: a key is never written twice.
    -- SQLite cannot drop a table's UNIQUE constraint: the table is made anew, rows and ids
    -- kept. legacy_alter_table leaves the view `flows` and its trigger as they are, naming
    -- flow_rows, which is again the table's name after the rename.
    PRAGMA legacy_alter_table = ON;
    CREATE TABLE flow_rows_11 (
        id              INTEGER PRIMARY KEY,
        boot            INTEGER NOT NULL,  -- texts.id of boot_id
        kernel_first_ns INTEGER NOT NULL,
        client          INTEGER NOT NULL,  -- texts.id of the address
        remote          INTEGER NOT NULL,  -- texts.id of the address
        protocol        INTEGER NOT NULL,
        client_port     INTEGER NOT NULL,
        remote_port     INTEGER NOT NULL,
        packets_up      INTEGER NOT NULL,
        bytes_up        INTEGER NOT NULL,
        packets_down    INTEGER NOT NULL,
        bytes_down      INTEGER NOT NULL,
        tcp_flags       INTEGER NOT NULL,
        first_seen      INTEGER NOT NULL,
        last_seen       INTEGER NOT NULL,
        name            INTEGER,
        name_source     INTEGER,
        cname           INTEGER,
        remote_class    INTEGER,
        app_protocol    INTEGER,
        app_decided     INTEGER,
        encrypted       INTEGER,
        owner_kind      INTEGER,
        owner           INTEGER,
        company         INTEGER,
        site            INTEGER,
        service         INTEGER,
        served_by       INTEGER,
        source          INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO flow_rows_11 SELECT * FROM flow_rows ORDER BY id;
    DROP TABLE flow_rows;
    ALTER TABLE flow_rows_11 RENAME TO flow_rows;
    PRAGMA legacy_alter_table = OFF;
    CREATE INDEX flow_rows_kernel_first_ns ON flow_rows (kernel_first_ns);
    CREATE INDEX flow_rows_last_seen ON flow_rows (last_seen);
    CREATE INDEX flow_rows_first_seen ON flow_rows (first_seen);
    CREATE INDEX flow_rows_remote ON flow_rows (remote);
    CREATE INDEX flow_rows_name ON flow_rows (name);
