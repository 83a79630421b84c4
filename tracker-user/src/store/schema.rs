//! The SQLite schema, as an ordered list of migrations. This is the one definition of the
//! database's shape; `tracker schema` prints it, comments included, for people who query it
//! directly.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Migrations only ever append:
//! a released migration is never edited, so every database reaches the same shape.
//!
//! `PRAGMA application_id` is [`APPLICATION_ID`], set by every migration (a database of an
//! earlier tracker, which has 0 there, gets it at its next migration). It marks the file as
//! tracker's for `file(1)` and for tracker itself: a SQLite file with another application id,
//! or with tables but no id and no version, is another program's and is left alone.

/// `PRAGMA application_id` of tracker's databases: the ASCII bytes of "TRKR", big-endian
/// (0x54524B52 = 1414679378). `file(1)` prints it as "SQLite 3.x database, application id
/// 1414679378".
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"TRKR");

/// Key of the database identity row in `meta` (migration 3).
pub const META_DB_ID: &str = "db_id";
/// Key of the `meta` row with the VPN subnets the daemon last watched (migration 5).
pub const META_LOCAL_NETS: &str = "local_nets";

/// Migration `i` (0-based) takes the database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: flows and IP block rules.
    r#"
    -- One row per kernel flow entry: a connection (or a UDP/ICMP exchange) between a client
    -- behind the interface and a remote host. Counters are the kernel's cumulative values, so
    -- writing the same entry again never double counts.
    CREATE TABLE flows (
        id              INTEGER PRIMARY KEY,
        boot_id         TEXT    NOT NULL,  -- kernel boot the entry belongs to
        kernel_first_ns INTEGER NOT NULL,  -- CLOCK_BOOTTIME ns of the first packet: with boot_id
                                           -- and the 5-tuple, names the kernel entry
        family          INTEGER NOT NULL,  -- 4 or 6
        client          TEXT    NOT NULL,  -- textual IP address of the device (phone)
        remote          TEXT    NOT NULL,  -- textual IP address of the other end
        protocol        INTEGER NOT NULL,  -- IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6)
        client_port     INTEGER NOT NULL,  -- 0 when the protocol has no ports
        remote_port     INTEGER NOT NULL,
        packets_up      INTEGER NOT NULL,  -- client -> remote, IP packets (GSO segments counted)
        bytes_up        INTEGER NOT NULL,  -- client -> remote, bytes of IP packets
        packets_down    INTEGER NOT NULL,  -- remote -> client
        bytes_down      INTEGER NOT NULL,
        tcp_flags       INTEGER NOT NULL,  -- OR of TCP flags seen (FIN 1, SYN 2, RST 4, PSH 8,
                                           -- ACK 16, URG 32, ECE 64, CWR 128)
        first_seen      INTEGER NOT NULL,  -- unix milliseconds
        last_seen       INTEGER NOT NULL,  -- unix milliseconds
        UNIQUE (boot_id, kernel_first_ns, family, client, remote, protocol, client_port, remote_port)
    );
    CREATE INDEX flows_last_seen ON flows (last_seen);
    CREATE INDEX flows_first_seen ON flows (first_seen);
    CREATE INDEX flows_remote ON flows (remote);

    -- Block rules. `kind` is 'ip' (an address or CIDR, enforced by the kernel's LPM tries);
    -- later kinds (domain, company, list) add rows of their own kinds.
    CREATE TABLE block_rules (
        id              INTEGER PRIMARY KEY,  -- also the rule id in the kernel map values
        kind            TEXT    NOT NULL,
        rule            TEXT    NOT NULL,     -- canonical form, e.g. 198.51.100.0/24
        comment         TEXT,
        created         INTEGER NOT NULL,     -- unix milliseconds
        expires         INTEGER,              -- unix milliseconds; NULL = until removed
        dropped_before  INTEGER NOT NULL DEFAULT 0, -- packets dropped by earlier kernel map
                                                    -- instances (before a reboot)
        dropped_kernel  INTEGER NOT NULL DEFAULT 0, -- last count read from the live kernel entry
        last_hit        INTEGER,                    -- unix milliseconds of the last drop
        UNIQUE (kind, rule)
    );

    -- Facts about the running daemon, for `tracker status`.
    CREATE TABLE daemon (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 2: the DNS query log and flow names.
    r#"
    -- One row per DNS exchange a client had: its query and, when seen, the response (paired by
    -- client, ports, resolver, transport and DNS id). A response whose query was not seen (the
    -- daemon started in between) gets a row of its own. Names are stored as received, in one
    -- canonical form: lower case, no trailing dot, bytes outside printable ASCII as \DDD.
    CREATE TABLE dns_queries (
        id            INTEGER PRIMARY KEY,
        ts            INTEGER NOT NULL,  -- unix ms the query was seen (the response, if not)
        answered      INTEGER,           -- unix ms the response was seen; NULL = no response
        client        TEXT    NOT NULL,  -- textual IP address of the device that asked
        client_port   INTEGER NOT NULL,
        resolver      TEXT    NOT NULL,  -- textual IP address of the DNS server asked
        resolver_port INTEGER NOT NULL,
        transport     TEXT    NOT NULL,  -- 'udp' or 'tcp'
        dns_id        INTEGER NOT NULL,  -- the message id (0-65535)
        qname         TEXT    NOT NULL,  -- question name, e.g. www.example.com
        qtype         TEXT    NOT NULL,  -- A, AAAA, HTTPS, ... or TYPEnnn
        rcode         TEXT,              -- NOERROR, NXDOMAIN, SERVFAIL, ...; NULL = no response
        truncated     INTEGER NOT NULL DEFAULT 0, -- 1 when the response had the TC bit set
        cname         TEXT,              -- last CNAME target on the chain from qname; NULL = none
        min_ttl       INTEGER            -- smallest TTL (s) of the addresses answered; NULL = none
    );
    CREATE INDEX dns_queries_ts ON dns_queries (ts);
    CREATE INDEX dns_queries_client ON dns_queries (client, ts);
    CREATE INDEX dns_queries_qname ON dns_queries (qname, ts);

    -- The answer section of each response, in order: CNAMEs, addresses and other records.
    CREATE TABLE dns_answers (
        query_id INTEGER NOT NULL REFERENCES dns_queries (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,  -- 0-based order in the answer section
        name     TEXT    NOT NULL,  -- owner name
        type     TEXT    NOT NULL,  -- A, AAAA, CNAME, ...
        ttl      INTEGER NOT NULL,  -- seconds
        data     TEXT    NOT NULL,  -- address, CNAME target, or the record as text (bounded)
        PRIMARY KEY (query_id, position)
    ) WITHOUT ROWID;
    -- Which names did an address stand for: answers by address.
    CREATE INDEX dns_answers_addr ON dns_answers (data) WHERE type IN ('A', 'AAAA');

    -- From this version on, flows.kernel_first_ns is on CLOCK_MONOTONIC_COARSE (the kernel
    -- programs' clock), not CLOCK_BOOTTIME; it still names one kernel entry within a boot.

    -- A flow's name, decided by the daemon when the flow is swept (see README, "Names").
    ALTER TABLE flows ADD COLUMN name TEXT;         -- the name the client used; NULL = unknown
    ALTER TABLE flows ADD COLUMN name_source TEXT;  -- 'dns', 'sni', 'http', 'local' or NULL
    ALTER TABLE flows ADD COLUMN cname TEXT;        -- last CNAME target behind a 'dns' name
    ALTER TABLE flows ADD COLUMN remote_class TEXT; -- public, documentation, private, tunnel,
                                                    -- loopback, cgnat, link_local, ...
    CREATE INDEX flows_name ON flows (name);
    "#,
    // 3: the database identity.
    r#"
    -- Facts about the database itself, written once. The migration adds one row:
    --   db_id  32 lower-case hex characters (16 bytes from the kernel's getrandom), this
    --          database's identity. The kernel maps pinned beside a daemon record the db_id of
    --          the database they belong to, so no command pairs one database's rule ids with
    --          another database's maps. Never changed; a copy of the file keeps it.
    -- From this version on, PRAGMA application_id is 1414679378 ("TRKR").
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 4: what each flow is (protocol, owner, service), the hourly roll-up the reports read, and
    // the devices.
    r#"
    -- A flow's labels, decided when it is written (see README, "Reports"): the entity table in
    -- use then (tracker's own and the user's overrides) and the flow's first payloads.
    ALTER TABLE flows ADD COLUMN app_protocol TEXT; -- tls, quic, http, dns, dot, doq, ssh, ntp,
                                                    -- stun, wireguard, openvpn, ike, dtls, unknown
    ALTER TABLE flows ADD COLUMN app_decided TEXT;  -- payload (its first bytes), port (the server's
                                                    -- well-known port), nothing (unknown)
    ALTER TABLE flows ADD COLUMN encrypted TEXT;    -- encrypted, unencrypted, unknown (by app_protocol)
    ALTER TABLE flows ADD COLUMN owner_kind TEXT;   -- company, domain (no entry knows the name),
                                                    -- local (a local peer), unnamed (no name)
    ALTER TABLE flows ADD COLUMN owner TEXT;        -- the company, or the name's registrable domain
    ALTER TABLE flows ADD COLUMN company TEXT;      -- the entity table's company for the name
    ALTER TABLE flows ADD COLUMN site TEXT;         -- the name's registrable domain
    ALTER TABLE flows ADD COLUMN service TEXT;      -- the app or SDK the name belongs to
    ALTER TABLE flows ADD COLUMN served_by TEXT;    -- a CDN or cloud company its CNAME chain reached
    -- Flows written before this version: their protocol and owner from what they stored.
    UPDATE flows SET app_protocol = 'unknown', app_decided = 'nothing', encrypted = 'unknown',
        owner_kind = CASE WHEN name_source = 'local' THEN 'local'
                          WHEN name IS NULL THEN 'unnamed' ELSE 'domain' END,
        owner = CASE WHEN name_source = 'local' THEN NULL ELSE name END;

    -- The roll-ups the reports read (store/rollup.rs keeps them, in the transaction that writes
    -- the rows they sum, and fills them from the rows already here when this migration runs).
    -- Flows by the UTC hour and day they started in, per client and, under client '', for all
    -- devices together, one report dimension at a time: a connection counts once, in the
    -- bucket it started in, with every byte it carried so far; a flow whose labels change (a
    -- late DNS answer names it) moves to its new group.
    CREATE TABLE rollup (
        dim          TEXT    NOT NULL,  -- owner (k1 owner_kind, k2 owner), service (k1),
                                        -- served_by (k1), protocol (k1 IP protocol number,
                                        -- k2 app_protocol, k3 encrypted)
        client       TEXT    NOT NULL,  -- the device's address; '' for all devices
        span         INTEGER NOT NULL,  -- the bucket's length: 3600000 (hour) or 86400000 (day)
        bucket       INTEGER NOT NULL,  -- unix ms of its start
        k1           TEXT    NOT NULL,
        k2           TEXT    NOT NULL,
        k3           TEXT    NOT NULL,
        connections  INTEGER NOT NULL,  -- flows that started in the bucket (0 once all moved away)
        packets      INTEGER NOT NULL,  -- their packets, both ways
        bytes_up     INTEGER NOT NULL,
        bytes_down   INTEGER NOT NULL,
        PRIMARY KEY (dim, client, span, bucket, k1, k2, k3)
    ) WITHOUT ROWID;
    -- The DNS log by UTC hour and day, client ('' for all devices) and name.
    CREATE TABLE dns_rollup (
        client       TEXT    NOT NULL,
        span         INTEGER NOT NULL,
        bucket       INTEGER NOT NULL,
        qname        TEXT    NOT NULL,
        queries      INTEGER NOT NULL,
        first_ts     INTEGER NOT NULL,  -- the bucket's first and last query of the name
        last_ts      INTEGER NOT NULL,
        client_bits  INTEGER NOT NULL,  -- OR of the askers' bits (client_bits.bit): distinct clients
        PRIMARY KEY (client, span, bucket, qname)
    ) WITHOUT ROWID;
    -- Each client address's bit in dns_rollup.client_bits, given at its first query (the 64th
    -- and later share bit 63).
    CREATE TABLE client_bits (
        client TEXT PRIMARY KEY,
        bit    INTEGER NOT NULL
    );

    -- The interface's WireGuard peers, as the daemon last read them (`wg show`), and the names
    -- users gave them (`tracker name-device`). A peer the daemon no longer sees is kept, so
    -- its flows keep their device.
    CREATE TABLE devices (
        public_key  TEXT PRIMARY KEY,  -- base64, as wg shows it
        name        TEXT UNIQUE,       -- the user's name for it; NULL = none
        allowed_ips TEXT NOT NULL,     -- its allowed IPs, space-separated CIDRs
        first_seen  INTEGER NOT NULL,  -- unix ms the daemon first saw the peer
        last_seen   INTEGER NOT NULL   -- unix ms the daemon last saw it
    );
    "#,
    // 5: where rows came from: the live interface, or a capture file imported.
    r#"
    -- meta gains a row: local_nets, the VPN subnets the daemon last named flows with (its
    -- interface's networks and --local-net), space-separated CIDRs, written at each start;
    -- an import of a capture of that interface takes them as the tunnel.

    -- The sources of rows: 0 is the daemon's live interface; `tracker import-pcap` adds one per
    -- --source name. Every flow, DNS query and roll-up row belongs to exactly one, so a report
    -- of an import never mixes in live traffic, nor the other way round.
    CREATE TABLE sources (
        id       INTEGER PRIMARY KEY,
        name     TEXT    NOT NULL UNIQUE,
        created  INTEGER NOT NULL          -- unix ms
    );
    INSERT INTO sources (id, name, created) VALUES (0, 'live', CAST(strftime('%s', 'now') AS INTEGER) * 1000);

    -- Capture files imported, by content: importing the same bytes again is recognised.
    CREATE TABLE imports (
        content   TEXT    PRIMARY KEY,     -- XXH3-128 of the whole file, 32 lower-case hex digits
        source    INTEGER NOT NULL REFERENCES sources (id),
        file      TEXT    NOT NULL,        -- the path it was imported from
        bytes     INTEGER NOT NULL,        -- its size
        started   INTEGER NOT NULL,        -- unix ms the import began
        finished  INTEGER,                 -- unix ms it ended; NULL while running or if it was
                                           -- killed
        packets   INTEGER NOT NULL DEFAULT 0, -- packets read
        first_ts  INTEGER,                 -- unix ms of its first and last packet
        last_ts   INTEGER,
        error     TEXT                     -- why it stopped early (a damaged file); NULL = read whole
    );

    ALTER TABLE flows ADD COLUMN source INTEGER NOT NULL DEFAULT 0;       -- sources.id
    ALTER TABLE dns_queries ADD COLUMN source INTEGER NOT NULL DEFAULT 0; -- sources.id
    -- An import writes a query once however often its file is imported (live queries have no
    -- such key: two identical queries in one millisecond are two queries).
    CREATE UNIQUE INDEX dns_queries_import_once ON dns_queries
        (source, ts, client, client_port, resolver, resolver_port, transport, dns_id, qname, qtype)
        WHERE source != 0;

    -- The roll-ups gain the source as their first key column (a WITHOUT ROWID table's key
    -- cannot change in place: copied into new tables).
    CREATE TABLE rollup_5 (
        source       INTEGER NOT NULL,  -- sources.id
        dim          TEXT    NOT NULL,
        client       TEXT    NOT NULL,
        span         INTEGER NOT NULL,
        bucket       INTEGER NOT NULL,
        k1           TEXT    NOT NULL,
        k2           TEXT    NOT NULL,
        k3           TEXT    NOT NULL,
        connections  INTEGER NOT NULL,
        packets      INTEGER NOT NULL,
        bytes_up     INTEGER NOT NULL,
        bytes_down   INTEGER NOT NULL,
        PRIMARY KEY (source, dim, client, span, bucket, k1, k2, k3)
    ) WITHOUT ROWID;
    INSERT INTO rollup_5 SELECT 0, * FROM rollup;
    DROP TABLE rollup;
    ALTER TABLE rollup_5 RENAME TO rollup;
    CREATE TABLE dns_rollup_5 (
        source       INTEGER NOT NULL,
        client       TEXT    NOT NULL,
        span         INTEGER NOT NULL,
        bucket       INTEGER NOT NULL,
        qname        TEXT    NOT NULL,
        queries      INTEGER NOT NULL,
        first_ts     INTEGER NOT NULL,
        last_ts      INTEGER NOT NULL,
        client_bits  INTEGER NOT NULL,
        PRIMARY KEY (source, client, span, bucket, qname)
    ) WITHOUT ROWID;
    INSERT INTO dns_rollup_5 SELECT 0, * FROM dns_rollup;
    DROP TABLE dns_rollup;
    ALTER TABLE dns_rollup_5 RENAME TO dns_rollup;
    "#,
    // 6: name rules (domain, company, service, list), per device and timed, with their history.
    r#"
    -- block_rules gains the device a rule holds for, when and why it ended, and the DNS queries
    -- name rules refused. A rule that ends is kept, with its counts (`tracker blocks
    -- --expired`); rule ids are never reused, so they stay the kernel's and the DNS log's.
    -- Rebuilt: its UNIQUE (kind, rule) becomes uniqueness among active rules only.
    CREATE TABLE block_rules_6 (
        id              INTEGER PRIMARY KEY,  -- also the rule id in the kernel map values
        kind            TEXT    NOT NULL,     -- 'ip', 'domain', 'company', 'service' or 'list'
        rule            TEXT    NOT NULL,     -- ip: canonical CIDR (198.51.100.0/24); domain: the
                                              -- name (example.com, and every name under it);
                                              -- company, service: its entity table name; list:
                                              -- the list's name
        client          TEXT,                 -- the device it holds for: its WireGuard public key,
                                              -- or an address; NULL = every device
        comment         TEXT,
        created         INTEGER NOT NULL,     -- unix milliseconds
        expires         INTEGER,              -- unix milliseconds; NULL = until removed
        ended           INTEGER,              -- unix milliseconds it stopped; NULL = active
        end_reason      TEXT,                 -- 'unblocked' or 'expired'; NULL while active
        dropped_before  INTEGER NOT NULL DEFAULT 0, -- ip: packets dropped by earlier kernel map
                                                    -- instances (before a reboot)
        dropped_kernel  INTEGER NOT NULL DEFAULT 0, -- ip: last count read from the kernel entry
        refused_before  INTEGER NOT NULL DEFAULT 0, -- names: DNS queries refused by kernel
                                                    -- entries no longer there
        refused_kernel  INTEGER NOT NULL DEFAULT 0, -- names: last sum read from its kernel entries
        last_hit        INTEGER                     -- unix milliseconds of the last drop or refusal
    );
    INSERT INTO block_rules_6 (id, kind, rule, comment, created, expires, dropped_before,
            dropped_kernel, last_hit)
        SELECT id, kind, rule, comment, created, expires, dropped_before, dropped_kernel, last_hit
        FROM block_rules;
    DROP TABLE block_rules;
    ALTER TABLE block_rules_6 RENAME TO block_rules;
    CREATE UNIQUE INDEX block_rules_active ON block_rules (kind, rule, coalesce(client, ''))
        WHERE ended IS NULL;
    CREATE INDEX block_rules_expires ON block_rules (expires) WHERE ended IS NULL AND expires IS NOT NULL;

    -- The names a name rule covers, each with every name under it: a domain rule's one domain,
    -- a company's or service's domains as the entity table had them when it was blocked (or
    -- blocked again), a list's entries. Kept when the rule ends.
    CREATE TABLE block_domains (
        rule    INTEGER NOT NULL REFERENCES block_rules (id),
        domain  TEXT    NOT NULL,  -- lower case, no trailing dot, e.g. ads.example.com
        PRIMARY KEY (rule, domain)
    ) WITHOUT ROWID;

    -- A query the kernel refused (answered NXDOMAIN, or reset over TCP) names the rule.
    ALTER TABLE dns_queries ADD COLUMN blocked_by INTEGER;  -- block_rules.id; NULL = not refused
    "#,
    // 7: shared addresses of name rules.
    r#"
    -- A blocked name's address that also serves names no rule blocks (a CDN's) is left open by
    -- default, so those names keep working; `--block-shared` blocks it anyway.
    ALTER TABLE block_rules ADD COLUMN block_shared INTEGER NOT NULL DEFAULT 0;  -- 1: block them too
    -- How many such addresses the daemon left open for the rule (name rules; the last count
    -- a daemon wrote while the rule was active).
    ALTER TABLE block_rules ADD COLUMN shared_open INTEGER NOT NULL DEFAULT 0;
    "#,
    // 8: compact rows (issue 14: at most 120 bytes a flow on disk). Readable views keep the
    // names and columns of before.
    r#"
    -- Every text the flows and the DNS log repeat (addresses, boot ids, names, labels, record
    -- types) is stored once here; the rows hold its id. Ids are never reused.
    CREATE TABLE texts (
        id    INTEGER PRIMARY KEY,
        text  TEXT    NOT NULL UNIQUE
    );

    -- The rows behind the view `flows`, columns as there but for family (from the address) and
    -- every text column an id into `texts` (NULL as before).
    CREATE TABLE flow_rows (
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
        source          INTEGER NOT NULL DEFAULT 0,
        UNIQUE (boot, kernel_first_ns, client, remote, protocol, client_port, remote_port)
    );
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT boot_id FROM flows WHERE boot_id IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT client FROM flows WHERE client IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT remote FROM flows WHERE remote IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT name FROM flows WHERE name IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT name_source FROM flows WHERE name_source IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT cname FROM flows WHERE cname IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT remote_class FROM flows WHERE remote_class IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT app_protocol FROM flows WHERE app_protocol IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT app_decided FROM flows WHERE app_decided IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT encrypted FROM flows WHERE encrypted IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT owner_kind FROM flows WHERE owner_kind IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT owner FROM flows WHERE owner IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT company FROM flows WHERE company IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT site FROM flows WHERE site IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT service FROM flows WHERE service IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT served_by FROM flows WHERE served_by IS NOT NULL;
    INSERT INTO flow_rows SELECT
        f.id,
        (SELECT id FROM texts WHERE text = f.boot_id),
        f.kernel_first_ns,
        (SELECT id FROM texts WHERE text = f.client),
        (SELECT id FROM texts WHERE text = f.remote),
        f.protocol,
        f.client_port,
        f.remote_port,
        f.packets_up,
        f.bytes_up,
        f.packets_down,
        f.bytes_down,
        f.tcp_flags,
        f.first_seen,
        f.last_seen,
        (SELECT id FROM texts WHERE text = f.name),
        (SELECT id FROM texts WHERE text = f.name_source),
        (SELECT id FROM texts WHERE text = f.cname),
        (SELECT id FROM texts WHERE text = f.remote_class),
        (SELECT id FROM texts WHERE text = f.app_protocol),
        (SELECT id FROM texts WHERE text = f.app_decided),
        (SELECT id FROM texts WHERE text = f.encrypted),
        (SELECT id FROM texts WHERE text = f.owner_kind),
        (SELECT id FROM texts WHERE text = f.owner),
        (SELECT id FROM texts WHERE text = f.company),
        (SELECT id FROM texts WHERE text = f.site),
        (SELECT id FROM texts WHERE text = f.service),
        (SELECT id FROM texts WHERE text = f.served_by),
        f.source
    FROM flows f ORDER BY f.id;
    DROP TABLE flows;
    CREATE INDEX flow_rows_last_seen ON flow_rows (last_seen);
    CREATE INDEX flow_rows_first_seen ON flow_rows (first_seen);
    CREATE INDEX flow_rows_remote ON flow_rows (remote);
    CREATE INDEX flow_rows_name ON flow_rows (name);
    -- Every flow, as before this version.
    CREATE VIEW flows AS SELECT
        f.id AS id,
        b.text AS boot_id,
        f.kernel_first_ns AS kernel_first_ns,
        CASE WHEN instr(c.text, ':') > 0 THEN 6 ELSE 4 END AS family,
        c.text AS client,
        r.text AS remote,
        f.protocol AS protocol,
        f.client_port AS client_port,
        f.remote_port AS remote_port,
        f.packets_up AS packets_up,
        f.bytes_up AS bytes_up,
        f.packets_down AS packets_down,
        f.bytes_down AS bytes_down,
        f.tcp_flags AS tcp_flags,
        f.first_seen AS first_seen,
        f.last_seen AS last_seen,
        t_name.text AS name,
        t_name_source.text AS name_source,
        t_cname.text AS cname,
        t_remote_class.text AS remote_class,
        t_app_protocol.text AS app_protocol,
        t_app_decided.text AS app_decided,
        t_encrypted.text AS encrypted,
        t_owner_kind.text AS owner_kind,
        t_owner.text AS owner,
        t_company.text AS company,
        t_site.text AS site,
        t_service.text AS service,
        t_served_by.text AS served_by,
        f.source AS source
    FROM flow_rows f
    LEFT JOIN texts b ON b.id = f.boot
    LEFT JOIN texts c ON c.id = f.client
    LEFT JOIN texts r ON r.id = f.remote
    LEFT JOIN texts t_name ON t_name.id = f.name
    LEFT JOIN texts t_name_source ON t_name_source.id = f.name_source
    LEFT JOIN texts t_cname ON t_cname.id = f.cname
    LEFT JOIN texts t_remote_class ON t_remote_class.id = f.remote_class
    LEFT JOIN texts t_app_protocol ON t_app_protocol.id = f.app_protocol
    LEFT JOIN texts t_app_decided ON t_app_decided.id = f.app_decided
    LEFT JOIN texts t_encrypted ON t_encrypted.id = f.encrypted
    LEFT JOIN texts t_owner_kind ON t_owner_kind.id = f.owner_kind
    LEFT JOIN texts t_owner ON t_owner.id = f.owner
    LEFT JOIN texts t_company ON t_company.id = f.company
    LEFT JOIN texts t_site ON t_site.id = f.site
    LEFT JOIN texts t_service ON t_service.id = f.service
    LEFT JOIN texts t_served_by ON t_served_by.id = f.served_by;
    CREATE TRIGGER flows_delete INSTEAD OF DELETE ON flows BEGIN
        DELETE FROM flow_rows WHERE id = old.id;
    END;

    -- The rows behind `dns_queries` and `dns_answers`, text columns as ids into `texts`.
    CREATE TABLE dns_query_rows (
        id            INTEGER PRIMARY KEY,
        ts            INTEGER NOT NULL,
        answered      INTEGER,
        client        INTEGER NOT NULL,  -- texts.id of the address
        client_port   INTEGER NOT NULL,
        resolver      INTEGER NOT NULL,  -- texts.id of the address
        resolver_port INTEGER NOT NULL,
        transport     INTEGER NOT NULL,  -- texts.id
        dns_id        INTEGER NOT NULL,
        qname         INTEGER NOT NULL,  -- texts.id
        qtype         INTEGER NOT NULL,  -- texts.id
        rcode         INTEGER,           -- texts.id
        truncated     INTEGER NOT NULL DEFAULT 0,
        cname         INTEGER,           -- texts.id
        min_ttl       INTEGER,
        source        INTEGER NOT NULL DEFAULT 0,
        blocked_by    INTEGER
    );
    CREATE TABLE dns_answer_rows (
        query_id INTEGER NOT NULL REFERENCES dns_query_rows (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name     INTEGER NOT NULL,  -- texts.id
        type     INTEGER NOT NULL,  -- texts.id
        ttl      INTEGER NOT NULL,
        data     INTEGER NOT NULL,  -- texts.id
        PRIMARY KEY (query_id, position)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT client FROM dns_queries WHERE client IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT resolver FROM dns_queries WHERE resolver IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT transport FROM dns_queries WHERE transport IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT qname FROM dns_queries WHERE qname IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT qtype FROM dns_queries WHERE qtype IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT rcode FROM dns_queries WHERE rcode IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT cname FROM dns_queries WHERE cname IS NOT NULL;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT name FROM dns_answers;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT type FROM dns_answers;
    INSERT OR IGNORE INTO texts (text) SELECT DISTINCT data FROM dns_answers;
    INSERT INTO dns_query_rows SELECT
        q.id,
        q.ts,
        q.answered,
        (SELECT id FROM texts WHERE text = q.client),
        q.client_port,
        (SELECT id FROM texts WHERE text = q.resolver),
        q.resolver_port,
        (SELECT id FROM texts WHERE text = q.transport),
        q.dns_id,
        (SELECT id FROM texts WHERE text = q.qname),
        (SELECT id FROM texts WHERE text = q.qtype),
        (SELECT id FROM texts WHERE text = q.rcode),
        q.truncated,
        (SELECT id FROM texts WHERE text = q.cname),
        q.min_ttl,
        q.source,
        q.blocked_by
    FROM dns_queries q ORDER BY q.id;
    INSERT INTO dns_answer_rows SELECT a.query_id, a.position, (SELECT id FROM texts WHERE text = a.name), (SELECT id FROM texts WHERE text = a.type), a.ttl, (SELECT id FROM texts WHERE text = a.data)
    FROM dns_answers a ORDER BY a.query_id, a.position;
    DROP TABLE dns_answers;
    DROP TABLE dns_queries;
    CREATE INDEX dns_query_rows_ts ON dns_query_rows (ts);
    CREATE INDEX dns_query_rows_client ON dns_query_rows (client, ts);
    CREATE INDEX dns_query_rows_qname ON dns_query_rows (qname, ts);
    CREATE UNIQUE INDEX dns_query_rows_import_once ON dns_query_rows
        (source, ts, client, client_port, resolver, resolver_port, transport, dns_id, qname, qtype)
        WHERE source != 0;
    -- Answers by address (and by CNAME target).
    CREATE INDEX dns_answer_rows_data ON dns_answer_rows (data);
    CREATE VIEW dns_queries AS SELECT
        q.id AS id, q.ts AS ts, q.answered AS answered, c.text AS client, q.client_port AS client_port,
        r.text AS resolver, q.resolver_port AS resolver_port, tr.text AS transport, q.dns_id AS dns_id,
        n.text AS qname, t.text AS qtype, rc.text AS rcode, q.truncated AS truncated, cn.text AS cname,
        q.min_ttl AS min_ttl, q.source AS source, q.blocked_by AS blocked_by
    FROM dns_query_rows q
        LEFT JOIN texts c ON c.id = q.client
        LEFT JOIN texts r ON r.id = q.resolver
        LEFT JOIN texts tr ON tr.id = q.transport
        LEFT JOIN texts n ON n.id = q.qname
        LEFT JOIN texts t ON t.id = q.qtype
        LEFT JOIN texts rc ON rc.id = q.rcode
        LEFT JOIN texts cn ON cn.id = q.cname;
    CREATE TRIGGER dns_queries_delete INSTEAD OF DELETE ON dns_queries BEGIN
        DELETE FROM dns_query_rows WHERE id = old.id;
    END;
    CREATE VIEW dns_answers AS SELECT
        a.query_id AS query_id, a.position AS position, n.text AS name, t.text AS type, a.ttl AS ttl,
        d.text AS data
    FROM dns_answer_rows a
        LEFT JOIN texts n ON n.id = a.name
        LEFT JOIN texts t ON t.id = a.type
        LEFT JOIN texts d ON d.id = a.data;
    "#,
    // 9: compact roll-ups (issue 14): their keys as ids into `texts`, buckets in hours. In a
    // file of its own, so this one stays readable.
    include_str!("migrations/9.sql"),
    // 10: closed days of the roll-ups packed, one blob a day and device (store/packed.rs).
    include_str!("migrations/10.sql"),
    // 11: flows found by their kernel start time, without the unique index of the whole key.
    include_str!("migrations/11.sql"),
    // 12: raw flows of closed days packed, one blob a device and day (store/packed_flows.rs).
    include_str!("migrations/12.sql"),
    // 13: no every-device roll-up rows, and no hour rows of packed days (store/rollup.rs).
    include_str!("migrations/13.sql"),
];

/// The version whose roll-up tables the writers write (migration 9's compact rows): a database
/// older than the roll-ups has them filled from its rows once it reaches it.
pub const ROLLUPS_FINAL: usize = 9;

/// The source id of the daemon's live interface (`sources`, migration 5).
pub const LIVE_SOURCE: i64 = 0;

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;
