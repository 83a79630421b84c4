//! The devices: WireGuard peers as the daemon read them, the names users give them, and which
//! client addresses a `--client` argument (a name, a public key or an address) stands for.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use rusqlite::{OptionalExtension as _, params};

use super::{Store, Writer, explain_path, rollup, schema::LIVE_SOURCE};
use crate::{text::quoted, wireguard::Peer};

/// A stored device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub public_key: String,
    pub name: Option<String>,
    pub allowed_ips: Vec<IpNet>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

impl Device {
    /// What reports call it: its name, else its first allowed IP's address, else its key.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.allowed_ips.first().map(|n| n.addr().to_string()))
            .unwrap_or_else(|| self.public_key.clone())
    }

    pub fn holds(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allowed_ips.iter().any(|n| n.contains(&ip))
    }
}

/// The devices, with the device of a client address found most specifically.
#[derive(Clone, Debug, Default)]
pub struct DeviceList(pub Vec<Device>);

impl DeviceList {
    /// The device whose allowed IPs hold `ip` most specifically.
    pub fn of(&self, ip: IpAddr) -> Option<&Device> {
        let ip = ip.to_canonical();
        self.0
            .iter()
            .filter_map(|d| {
                d.allowed_ips.iter().filter(|n| n.contains(&ip)).map(|n| n.prefix_len()).max().map(|p| (p, d))
            })
            .max_by_key(|(p, _)| *p)
            .map(|(_, d)| d)
    }
}

/// What `--client` selected: a label for the output and the client addresses to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFilter {
    pub label: String,
    /// Client addresses as stored (text), those of the device's allowed IPs that have flows.
    pub addresses: Vec<String>,
}

impl Writer<'_> {
    /// Records the peers `wg show` listed now: new ones are added, known ones get their current
    /// allowed IPs; names and peers no longer listed are kept.
    pub fn upsert_devices(&self, peers: &[Peer], now_ms: i64) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO devices (public_key, allowed_ips, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (public_key) DO UPDATE SET allowed_ips = excluded.allowed_ips, last_seen = excluded.last_seen",
        )?;
        for p in peers {
            let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
            stmt.execute(params![p.public_key, ips.join(" "), now_ms]).map_err(|e| explain_path(self.path, e))?;
        }
        Ok(())
    }
}

impl Store {
    pub fn devices(&self) -> Result<DeviceList> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT public_key, name, allowed_ips, first_seen, last_seen FROM devices ORDER BY first_seen, public_key",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (public_key, name, ips, first_seen_ms, last_seen_ms) = row.context("reading devices")?;
            // Written by the daemon from `wg show`, so they parse; a hand-edited one is skipped.
            let allowed_ips = ips.split_whitespace().filter_map(|s| s.parse().ok()).collect();
            out.push(Device { public_key, name, allowed_ips, first_seen_ms, last_seen_ms });
        }
        Ok(DeviceList(out))
    }

    /// Gives the device `which` (its public key, one of its addresses, or its current name) the
    /// name `name`. Returns the device's public key.
    pub fn name_device(&mut self, which: &str, name: &str) -> Result<String> {
        check_device_name(name)?;
        let devices = self.devices()?;
        let device = find_device(&devices, which)?.with_context(|| no_such_device(which, &devices))?;
        if let Some(other) =
            devices.0.iter().find(|d| d.name.as_deref() == Some(name) && d.public_key != device.public_key)
        {
            bail!("{} is already the name of the device {}", quoted(name), other.public_key);
        }
        let key = device.public_key.clone();
        self.write(|w| {
            w.conn
                .execute("UPDATE devices SET name = ?1 WHERE public_key = ?2", params![name, key])
                .map_err(|e| explain_path(w.path, e))
        })?;
        Ok(key)
    }

    /// The client addresses `arg` stands for: a device's name, its public key, or a tunnel
    /// address (the whole device when a device holds it, else that address alone).
    pub fn client_filter(&self, arg: &str) -> Result<ClientFilter> {
        let devices = self.devices()?;
        let clients = self.client_addresses()?;
        if let Some(device) = find_device(&devices, arg)? {
            let addresses = clients.into_iter().filter(|c| c.parse().is_ok_and(|ip| device.holds(ip))).collect();
            return Ok(ClientFilter { label: device.label(), addresses });
        }
        match arg.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                let addresses = clients.into_iter().filter(|c| c.parse::<IpAddr>().is_ok_and(|c| c == ip)).collect();
                Ok(ClientFilter { label: ip.to_string(), addresses })
            }
            Err(_) => bail!("{}", no_such_device(arg, &devices)),
        }
    }

    /// Connections and bytes per client address, over all time: the report's per-client sums
    /// ([`rollup::client_groups`]) over a period with no start, in address order.
    pub fn client_totals(&self) -> Result<Vec<(String, u64, u64)>> {
        let _snapshot = self.snapshot()?;
        let all_time = rollup::Period::read(&self.conn, LIVE_SOURCE, i64::MIN / 2)?;
        let mut totals: Vec<(String, u64, u64)> = rollup::client_groups(&self.conn, &all_time, None, &[])?
            .into_iter()
            .map(|(client, c)| (client, c.connections.max(0) as u64, c.bytes().max(0) as u64))
            .collect();
        totals.sort();
        Ok(totals)
    }

    /// Every client address that has flows.
    fn client_addresses(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT t.text FROM (SELECT client FROM rollup_rows WHERE dim = {0} AND hours = ?1
                                 UNION SELECT client FROM rollup_packed WHERE dim = {0}) g
                 JOIN texts t ON t.id = g.client",
            rollup::Dim::Protocol.code()
        ))?;
        let rows = stmt.query_map([rollup::DAY_MS / rollup::HOUR_MS], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>().context("reading client addresses")
    }

    /// The stored name of a device, if it has one (for tests and messages).
    pub fn device_name(&self, public_key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT name FROM devices WHERE public_key = ?1", [public_key], |r| r.get(0))
            .optional()?
            .flatten())
    }
}

/// The device `which` names: by name, public key, or an address its allowed IPs hold.
fn find_device<'a>(devices: &'a DeviceList, which: &str) -> Result<Option<&'a Device>> {
    if let Some(d) = devices.0.iter().find(|d| d.name.as_deref() == Some(which) || d.public_key == which) {
        return Ok(Some(d));
    }
    Ok(which.parse::<IpAddr>().ok().and_then(|ip| devices.of(ip)))
}

fn no_such_device(which: &str, devices: &DeviceList) -> String {
    if devices.0.is_empty() {
        return format!(
            "no device is called {}, and no devices are known yet (the daemon lists the WireGuard peers when it runs)",
            quoted(which)
        );
    }
    let known: Vec<String> = devices.0.iter().map(Device::label).collect();
    format!(
        "no device is called {}; known devices: {} (or give a public key or a tunnel address)",
        quoted(which),
        known.join(", ")
    )
}

/// A device name must not read as an address or a key, so `--client` stays unambiguous.
fn check_device_name(name: &str) -> Result<()> {
    const MAX_LEN: usize = 64;
    if name.trim().is_empty() || name.len() > MAX_LEN || name.chars().any(char::is_control) {
        bail!("a device name is 1 to {MAX_LEN} bytes of printable text, not {}", quoted(name));
    }
    if name.parse::<IpAddr>().is_ok() || name.parse::<IpNet>().is_ok() {
        bail!("{} is an address; give the device a name that is not one", quoted(name));
    }
    // WireGuard keys are 32 bytes in base64: 44 characters ending in '='.
    const KEY_LEN: usize = 44;
    if name.len() == KEY_LEN && name.ends_with('=') {
        bail!("{} looks like a public key; give the device a name that is not one", quoted(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    const PHONE: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const LAPTOP: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

    fn store_with_devices(name: &str) -> Store {
        let mut s = Store::open(&temp_db(name)).unwrap();
        let peers = [
            Peer {
                public_key: PHONE.into(),
                allowed_ips: vec!["10.77.0.2/32".parse().unwrap(), "fd77::2/128".parse().unwrap()],
            },
            Peer { public_key: LAPTOP.into(), allowed_ips: vec!["10.77.0.3/32".parse().unwrap()] },
        ];
        s.write(|w| w.upsert_devices(&peers, 1_000)).unwrap();
        s
    }

    #[test]
    fn devices_are_named_by_key_or_address_and_names_stay_unambiguous() {
        let mut s = store_with_devices("devices-name");
        assert_eq!(s.name_device("fd77::2", "phone").unwrap(), PHONE);
        assert_eq!(s.device_name(PHONE).unwrap().as_deref(), Some("phone"));
        assert_eq!(s.name_device(LAPTOP, "laptop").unwrap(), LAPTOP);
        let err = s.name_device("10.77.0.3", "phone").unwrap_err().to_string();
        assert!(err.contains("already the name of the device"), "{err}");
        for bad in ["10.0.0.1", "", "a\u{1b}b", LAPTOP] {
            assert!(s.name_device("phone", bad).is_err(), "{bad:?}");
        }
        let err = s.name_device("10.77.0.99", "x").unwrap_err().to_string();
        assert!(err.contains("known devices: laptop, phone"), "{err}");
        // Renaming is by the current name too; a peer listed again keeps its name.
        s.name_device("phone", "my phone").unwrap();
        s.write(|w| w.upsert_devices(&[Peer { public_key: PHONE.into(), allowed_ips: vec![] }], 2_000)).unwrap();
        let d = s.devices().unwrap();
        let phone = d.0.iter().find(|d| d.public_key == PHONE).unwrap();
        assert_eq!(phone.name.as_deref(), Some("my phone"));
        assert_eq!((phone.first_seen_ms, phone.last_seen_ms), (1_000, 2_000));
    }

    #[test]
    fn the_device_of_an_address_is_the_most_specific() {
        let d = DeviceList(vec![
            Device {
                public_key: "a".into(),
                name: None,
                allowed_ips: vec!["10.77.0.0/24".parse().unwrap()],
                first_seen_ms: 0,
                last_seen_ms: 0,
            },
            Device {
                public_key: "b".into(),
                name: None,
                allowed_ips: vec!["10.77.0.3/32".parse().unwrap()],
                first_seen_ms: 0,
                last_seen_ms: 0,
            },
        ]);
        assert_eq!(d.of("10.77.0.3".parse().unwrap()).map(|d| d.public_key.as_str()), Some("b"));
        assert_eq!(d.of("10.77.0.4".parse().unwrap()).map(|d| d.public_key.as_str()), Some("a"));
        assert_eq!(d.of("::ffff:10.77.0.3".parse().unwrap()).map(|d| d.public_key.as_str()), Some("b"));
        assert!(d.of("192.0.2.1".parse().unwrap()).is_none());
    }
}
