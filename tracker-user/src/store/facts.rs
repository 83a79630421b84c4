//! The daemon's facts (the `daemon` table): what the running daemon tells every other command,
//! typed, with their keys defined once, here, by the fields of [`DaemonFacts`].

/// Declares [`DaemonFacts`]: each field is one key of the `daemon` table, named as the field,
/// stored as text, and read back as its type (a value that does not parse reads as absent).
macro_rules! daemon_facts {
    ($( $(#[doc = $doc:literal])* $field:ident: $ty:ty, )*) => {
        /// What the daemon records for `tracker status` and the other commands. Every fact is
        /// optional: the daemon writes its own at start and its counts at each sweep, and a
        /// database whose daemon never ran has none.
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct DaemonFacts {
            $(
                $(#[doc = $doc])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl DaemonFacts {
            /// From the table's (key, value) rows; keys this version does not know are
            /// skipped (a newer daemon may write more).
            pub fn from_rows(rows: impl IntoIterator<Item = (String, String)>) -> Self {
                let mut facts = Self::default();
                for (key, value) in rows {
                    match key.as_str() {
                        $(stringify!($field) => facts.$field = value.parse().ok(),)*
                        _ => {}
                    }
                }
                facts
            }

            /// The facts that are set, as (key, value) rows.
            pub fn rows(&self) -> Vec<(&'static str, String)> {
                let mut rows = Vec::new();
                $(
                    if let Some(v) = &self.$field {
                        rows.push((stringify!($field), v.to_string()));
                    }
                )*
                rows
            }
        }
    };
}

daemon_facts! {
    /// The interface the daemon watches.
    iface: String,
    /// The interface's link type, as people say it ("raw IP (WireGuard/TUN)").
    link_type: String,
    /// How XDP is attached (native, generic, a pinned link kept).
    xdp_mode: String,
    /// Where the daemon pins its maps and links: a command on another pin directory is
    /// refused rather than written into maps that are not this database's.
    daemon_pin_dir: String,
    /// When the daemon started, RFC 3339.
    started: String,
    /// The daemon's version.
    version: String,
    /// The daemon's PID, written only once it is attached: tells a waiting script that *this*
    /// daemon is ready, not links a crashed one left pinned.
    attached_pid: u32,
    /// DNS messages the kernel handed over (queries and responses).
    dns_messages: u64,
    /// Messages that did not parse (hostile, broken, or a TCP segment that does not start a
    /// message): logged at debug and otherwise ignored; they name nothing.
    dns_malformed: u64,
    /// Flows the daemon deleted from the kernel tables once they ended, since the tables were
    /// created: with the kernel's `flows_created` it tells evictions from endings.
    flows_ended: u64,
    /// The dashboard's URLs, separated by spaces (tunnel addresses first); absent when it is
    /// off or could not listen.
    dashboard: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip_through_rows_and_bad_values_read_as_absent() {
        let facts = DaemonFacts {
            iface: Some("wg0".into()),
            attached_pid: Some(4242),
            flows_ended: Some(7),
            ..DaemonFacts::default()
        };
        let rows: Vec<(String, String)> = facts.rows().into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(
            rows,
            [
                ("iface".into(), "wg0".into()),
                ("attached_pid".into(), "4242".into()),
                ("flows_ended".into(), "7".into())
            ]
        );
        assert_eq!(DaemonFacts::from_rows(rows), facts);
        let odd = [("attached_pid", "a pid"), ("from_a_newer_daemon", "1"), ("version", "0.1.0")];
        let read = DaemonFacts::from_rows(odd.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(read, DaemonFacts { version: Some("0.1.0".into()), ..DaemonFacts::default() });
    }

    #[test]
    fn numbers_serialize_as_numbers_and_absent_facts_not_at_all() {
        let facts = DaemonFacts { iface: Some("123".into()), dns_messages: Some(7), ..DaemonFacts::default() };
        assert_eq!(serde_json::to_value(&facts).unwrap(), serde_json::json!({"iface": "123", "dns_messages": 7}));
    }
}
