//! `tracker dashboard`: where to open the dashboard from the phone (its addresses, and a QR code
//! of one in the terminal), and who may open it; `--set-password`, the password its changes
//! need, read without echo from the terminal or as a line from stdin; `--login-link`, a
//! one-time link (and its QR code) that logs a browser in without the password.

use std::{
    io::{BufRead as _, IsTerminal as _, Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use qrcode::{EcLevel, QrCode, render::unicode::Dense1x2};

use super::{Global, open_existing};
use crate::{
    daemon,
    store::Store,
    timefmt,
    web::dashboard::{link, password},
};

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Draw the QR code dark on light, for a terminal with a light background (by default it is
    /// drawn for a dark one, as most terminals are).
    #[arg(long)]
    pub light_terminal: bool,
    /// Only the addresses, no QR code.
    #[arg(long)]
    pub no_qr: bool,
    /// Set the password that blocking and unblocking from the dashboard need (looking needs
    /// none): typed twice without echo on a terminal, or the first line of stdin for scripts
    /// (`printf '%s\n' "$PW" | tracker dashboard --set-password`). At least 8 characters. It is
    /// stored hashed (Argon2id) in the database; a new one ends what the old one allowed.
    #[arg(long, conflicts_with_all = ["light_terminal", "no_qr", "login_link"])]
    pub set_password: bool,
    /// Print a one-time login link, and its QR code, to log the phone's browser in without the
    /// password: open it (or scan the code) within 10 minutes and that browser can block and
    /// unblock, as after a password login. It works once; a new link replaces an unused one.
    /// Needs the running daemon's dashboard, and root (it writes the database).
    #[arg(long)]
    pub login_link: bool,
    /// How long the --login-link works if not used (30s, 10m, 1h; at most 24h).
    #[arg(long, value_name = "DURATION", requires = "login_link", value_parser = parse_valid_for)]
    pub valid_for: Option<Duration>,
}

/// `--valid-for`: a duration up to [`link::MAX_LIFETIME`].
fn parse_valid_for(s: &str) -> Result<Duration> {
    let d = super::parse_duration(s)?;
    if d > link::MAX_LIFETIME {
        bail!("a login link works for at most {}; make a new one when needed", link::say(link::MAX_LIFETIME));
    }
    Ok(d)
}

/// The QR code's colours: the blocks a terminal draws are its text colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terminal {
    /// Light text on dark: blocks are the QR code's light modules.
    Dark,
    Light,
}

pub fn dashboard(global: &Global, args: &DashboardArgs) -> Result<()> {
    if args.set_password {
        return set_password(global);
    }
    let store = open_existing(global)?;
    let facts = store.daemon_facts()?;
    if daemon::daemon_pid(&global.db).is_none() {
        bail!(
            "the daemon is not running on {}: start it with `tracker run`, which serves the dashboard \
             unless told --no-dashboard",
            global.db.display()
        );
    }
    let Some(urls) = facts.dashboard else {
        bail!(
            "the daemon runs without the dashboard: started with --no-dashboard, or it could not listen \
             (its log says why)"
        );
    };
    let urls: Vec<&str> = urls.split_whitespace().collect();
    let iface = facts.iface.as_deref().unwrap_or("wg0");
    let terminal = if args.light_terminal { Terminal::Light } else { Terminal::Dark };
    let qr = (!args.no_qr).then_some(terminal);
    if args.login_link {
        let lifetime = args.valid_for.unwrap_or(link::LIFETIME);
        // Written only once the daemon's dashboard is known to run: a refusal changes nothing.
        let token = link::issue(&Store::open(&global.db)?, lifetime, timefmt::now_ms())?;
        let links: Vec<String> = urls.iter().map(|u| link::url(u, &token)).collect();
        let links: Vec<&str> = links.iter().map(String::as_str).collect();
        let text = login_link_instructions(&links, lifetime, qr)?;
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    }
    let mut text = instructions(&urls, iface, qr)?;
    if password::load(&store)?.is_none() {
        text.push_str(
            "To block and unblock from the dashboard, set its password once: `tracker dashboard --set-password`. \
             Or log a browser in once, without a password: `tracker dashboard --login-link`.\n",
        );
    }
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// `--set-password`: reads it, hashes it and stores it; the running dashboard reads it at the
/// next login, so no restart is needed.
fn set_password(global: &Global) -> Result<()> {
    let password = read_password()?;
    // Checked before the database is opened: a bad password changes nothing.
    password::check(&password).map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    let phc = password::hash(&password)?;
    let store = Store::open(&global.db)?;
    password::save(&store, &phc)?;
    println!(
        "The dashboard's password is set. Log in on the dashboard (Log in, at the top of a page) to block and \
         unblock; browsers logged in before (with an earlier password or a link) can no longer change anything."
    );
    Ok(())
}

/// The password: typed twice without echo on a terminal, else the first line of stdin.
fn read_password() -> Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New dashboard password: ").context("reading the password")?;
        let again = rpassword::prompt_password("The same again: ").context("reading the password")?;
        if first != again {
            bail!("the two passwords differ; nothing was changed");
        }
        return Ok(first);
    }
    let mut line = String::new();
    // One line more than a password may have is enough to tell that it is too long.
    let limit = u64::try_from(password::MAX_BYTES + 2).unwrap_or(u64::MAX);
    std::io::stdin().lock().take(limit).read_line(&mut line).context("reading the password from stdin")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Whether a dashboard URL is on the host's loopback (only for a browser on the host itself).
fn is_loopback(url: &str) -> bool {
    address(url).is_some_and(|a| a.ip().is_loopback())
}

/// The address of a dashboard URL or of a path under it (a login link).
fn address(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")?.split('/').next()?.parse().ok()
}

/// What `tracker dashboard` prints: the addresses to open from a phone (with a QR code of the
/// first, an IPv4 one if there is one: shorter, and every phone has IPv4 in the tunnel), the
/// address on the host itself, and the access rules.
fn instructions(urls: &[&str], iface: &str, qr: Option<Terminal>) -> Result<String> {
    let (local, remote): (Vec<&str>, Vec<&str>) = urls.iter().partition(|u| is_loopback(u));
    let mut out = String::new();
    if remote.is_empty() {
        out.push_str(&format!(
            "The dashboard listens on this host only: {iface} had no address when the daemon started.\n"
        ));
    } else {
        out.push_str("Open the dashboard on a phone or computer connected to the VPN:\n\n");
        for u in &remote {
            out.push_str(&format!("  {u}\n"));
        }
        let first = remote.iter().find(|u| address(u).is_some_and(|a| a.is_ipv4())).unwrap_or(&remote[0]);
        if let Some(terminal) = qr {
            out.push_str(&format!("\nOr scan this with the phone's camera ({first}):\n\n"));
            out.push_str(&qr_text(first, terminal)?);
        }
    }
    if !local.is_empty() {
        out.push_str(&format!("\nOn this host itself: {}\n", local.join("  ")));
    }
    out.push_str(&format!(
        "\nWho can open it: the devices of the WireGuard VPN (a connection from one of {iface}'s \
         peers' allowed IPs, as `wg show {iface}` lists them) and this host (localhost). Anyone else's \
         connection is reset before anything is sent. It shows what the devices talked to; it fetches \
         nothing from the internet.\nTurn it off with `tracker run --no-dashboard`; another port: \
         `--dashboard-port`.\n"
    ));
    Ok(out)
}

/// What `--login-link` prints: the link for the phone (each tunnel address; a QR code of the
/// IPv4 one), the one for this host, how long it works and that it works once.
fn login_link_instructions(links: &[&str], lifetime: Duration, qr: Option<Terminal>) -> Result<String> {
    let (local, remote): (Vec<&str>, Vec<&str>) = links.iter().partition(|u| is_loopback(u));
    let mut out = format!(
        "A one-time login link: open it within {} in the phone's browser (connected to the VPN) and that \
         browser can block and unblock from the dashboard. It works once, for one browser; a new \
         `tracker dashboard --login-link` replaces it.\n\n",
        link::say(lifetime)
    );
    for u in &remote {
        out.push_str(&format!("  {u}\n"));
    }
    if let Some(first) = remote.iter().find(|u| address(u).is_some_and(|a| a.is_ipv4())).or(remote.first())
        && let Some(terminal) = qr
    {
        out.push_str("\nOr scan this with the phone's camera:\n\n");
        out.push_str(&qr_text(first, terminal)?);
    }
    if !local.is_empty() {
        out.push_str(&format!("\nOn this host itself: {}\n", local.join("  ")));
    }
    out.push_str("\nKeep it to yourself until it is used: whoever opens it first, from the VPN, is logged in.\n");
    Ok(out)
}

/// `url` as a QR code of text blocks, two modules per character cell, with the quiet zone the
/// standard asks for.
fn qr_text(url: &str, terminal: Terminal) -> Result<String> {
    let code = QrCode::with_error_correction_level(url, EcLevel::M).context("making the QR code")?;
    let (dark, light) = match terminal {
        Terminal::Dark => (Dense1x2::Light, Dense1x2::Dark),
        Terminal::Light => (Dense1x2::Dark, Dense1x2::Light),
    };
    let mut text = code.render::<Dense1x2>().dark_color(dark).light_color(light).quiet_zone(true).build();
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phone_gets_the_tunnel_addresses_and_a_qr_code_of_the_ipv4_one() {
        let urls = ["http://[fd77::1]:8722/", "http://10.77.0.1:8722/", "http://127.0.0.1:8722/", "http://[::1]:8722/"];
        let text = instructions(&urls, "wg0", Some(Terminal::Dark)).unwrap();
        let phone = text.find("  http://[fd77::1]:8722/\n  http://10.77.0.1:8722/\n").expect(&text);
        assert!(text.contains("scan this with the phone's camera (http://10.77.0.1:8722/)"), "{text}");
        assert!(text.contains("On this host itself: http://127.0.0.1:8722/  http://[::1]:8722/"), "{text}");
        assert!(text.contains("wg show wg0") && text.contains("--no-dashboard"), "{text}");
        let qr = qr_text("http://10.77.0.1:8722/", Terminal::Dark).unwrap();
        assert!(text[phone..].contains(&qr));
        // A square of half-height rows: as many rows as columns / 2, every row as wide.
        let rows: Vec<usize> = qr.lines().map(|l| l.chars().count()).collect();
        assert!(rows.iter().all(|&w| w == rows[0]), "{rows:?}");
        assert_eq!(rows.len(), rows[0].div_ceil(2), "{qr}");
        // Dark terminal: the quiet zone is drawn (full blocks), so the first row is all blocks.
        assert!(qr.lines().next().unwrap().chars().all(|c| c == '█'), "{qr}");
        let light = qr_text("http://10.77.0.1:8722/", Terminal::Light).unwrap();
        assert!(light.lines().next().unwrap().chars().all(|c| c == ' '), "{light}");

        let alone = instructions(&["http://127.0.0.1:8722/"], "wg0", Some(Terminal::Dark)).unwrap();
        assert!(alone.starts_with("The dashboard listens on this host only") && !alone.contains('█'), "{alone}");
        let no_qr = instructions(&urls[..2], "wg0", None).unwrap();
        assert!(!no_qr.contains('█') && no_qr.contains("http://10.77.0.1:8722/"), "{no_qr}");
    }

    #[test]
    fn a_login_link_is_printed_for_the_phone_with_its_qr_code_and_its_terms() {
        let links =
            ["http://10.77.0.1:8722/link/ab12", "http://[fd77::1]:8722/link/ab12", "http://127.0.0.1:8722/link/ab12"];
        let text = login_link_instructions(&links, Duration::from_secs(600), Some(Terminal::Dark)).unwrap();
        assert!(text.starts_with("A one-time login link: open it within 10 min "), "{text}");
        assert!(text.contains("  http://10.77.0.1:8722/link/ab12\n  http://[fd77::1]:8722/link/ab12\n"), "{text}");
        assert!(text.contains(&qr_text(links[0], Terminal::Dark).unwrap()), "the QR code is of the IPv4 link");
        assert!(text.contains("On this host itself: http://127.0.0.1:8722/link/ab12\n"), "{text}");
        assert!(text.contains("It works once"), "{text}");
        let no_qr = login_link_instructions(&links, Duration::from_secs(30), None).unwrap();
        assert!(!no_qr.contains('█') && no_qr.contains("within 30 s"), "{no_qr}");
        assert!(parse_valid_for("25h").is_err() && parse_valid_for("0s").is_err());
        assert_eq!(parse_valid_for("2s").unwrap(), Duration::from_secs(2));
    }
}
