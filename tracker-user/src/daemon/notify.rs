//! Readiness for a service manager (sd_notify): `READY=1` once the programs are attached and
//! the daemon counts, `STOPPING=1` when it stops, sent to `$NOTIFY_SOCKET` when there is one.
//! systemd's `Type=notify` then starts what depends on tracker only once blocking holds.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` lines) to the service manager, if any. A
/// failure is logged: the daemon works without a manager listening.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        // A leading `@` names a socket in the abstract namespace (sd_notify(3)).
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
            None => s.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!("telling the service manager {state:?} at {}: {e}", path.display());
    }
}
