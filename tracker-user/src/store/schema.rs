//! The SQLite schema, as an ordered list of migrations. This is the one definition of the
//! database's shape; `docs/schema.md` describes it for people who query it directly.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Migrations only ever append:
//! a released migration is never edited, so every database reaches the same shape.

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
];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;
