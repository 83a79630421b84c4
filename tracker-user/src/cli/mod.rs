//! The command line: argument definitions (with the help text that teaches), and one function per
//! command that reads the store or the pinned maps and prints through [`output`].

mod block;
mod bypass;
pub(crate) mod config;
mod dashboard;
mod dns;
mod entities;
mod experiment;
mod import;
mod names;
pub mod output;
mod prune;
pub mod report;
mod run;

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    analysis::entity::EntityTable,
    kernel::{self, PinDir},
    store::{self, FlowQuery, Store, devices::ClientFilter},
    timefmt,
};
use output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "tracker",
    version,
    about = "See every server the devices behind your WireGuard VPN talk to, and block them in the kernel.",
    long_about = "tracker watches a WireGuard interface (wg0) with an XDP program and a TC program, \
counts every flow in the kernel, keeps them in a SQLite database, and drops traffic to hosts you \
block, before it reaches the rest of the system.\n\n\
Start the daemon with `tracker run` (as root), then, in another shell:\n  \
tracker flows                      who the phone talked to, biggest first, and by what name\n  \
tracker dns                        every DNS query and the answers it got\n  \
tracker domains --min-queries 10   names queried at least 10 times this week\n  \
tracker report                     companies, apps, encrypted or not, protocols, devices\n  \
tracker report --html report.html  the same as a page with charts\n  \
tracker import-pcap phone.pcapng   a capture you already have, through the same reports\n  \
tracker block-ip 203.0.113.7       drop that host, in the kernel, now\n  \
tracker block-company Braze --for 30m   refuse a company's names for half an hour\n  \
tracker import-blocklist ads.hosts refuse every name of a hosts-format list\n  \
tracker blocks                     rules and how many packets or queries each stopped\n  \
tracker experiment Braze --for 30m what stops working without Braze\n  \
tracker unblock-ip 203.0.113.7     undo\n  \
tracker dashboard                  open the dashboard from the phone: address and QR code\n  \
tracker status                     is it running, and what the kernel counted\n\n\
Every command uses the same database and pin directory as the daemon unless told otherwise.",
    after_help = "Docs: README.md. The database schema, commented: `tracker schema`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, with the daemon's defaults, so the CLI and the daemon agree
/// without extra flags.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// SQLite database (the daemon's; `tracker run` and block commands create it).
    #[arg(long, global = true, env = "TRACKER_DB", default_value = store::DEFAULT_DB,
          help_heading = GLOBAL_HEADING)]
    pub db: PathBuf,
    /// Directory on a BPF filesystem where the kernel maps and program links are pinned.
    #[arg(long, global = true, env = "TRACKER_PIN_DIR", default_value = kernel::DEFAULT_PIN_DIR,
          help_heading = GLOBAL_HEADING)]
    pub pin_dir: PathBuf,
    /// Your additions to the table of companies and services (TOML, the shape of tracker's own
    /// table; README, "Companies and services"). An entry named like one of tracker's replaces
    /// it. Default: /etc/tracker/entities.toml when it exists.
    #[arg(long, global = true, env = "TRACKER_ENTITIES", value_name = "FILE", help_heading = GLOBAL_HEADING)]
    pub entities: Option<PathBuf>,
    /// Settings file (TOML): any option above at its top level, `tracker run`'s in a `[run]`
    /// table, named as the options are (`db = "/srv/tracker.db"`, `[run]` `keep-raw = "90d"`).
    /// Options on the command line and their environment variables win over it. Default:
    /// /etc/tracker/tracker.toml when it exists.
    #[arg(long, global = true, env = config::CONFIG_ENV, value_name = "FILE", help_heading = GLOBAL_HEADING)]
    pub config: Option<PathBuf>,
}

/// Where the user's entity overrides are looked for when `--entities` is not given.
pub const DEFAULT_ENTITIES: &str = "/etc/tracker/entities.toml";

impl Global {
    /// The entity table in use: tracker's own, with the user's file over it. A file given
    /// with `--entities` must exist; the default one may be missing. A bad file is refused
    /// whole, with the reason.
    pub fn entity_table(&self) -> Result<EntityTable> {
        let builtin = EntityTable::builtin();
        let (path, required) = match &self.entities {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_ENTITIES), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(builtin),
            Err(e) => return Err(e).with_context(|| format!("reading the entity file {}", path.display())),
        };
        builtin.with_overrides(&text).with_context(|| format!("the entity file {} was not used", path.display()))
    }
}

/// The `--help` heading of the options every command takes, apart from each command's own.
const GLOBAL_HEADING: &str = "Global options";

/// Environment variables that stand for options. Set but empty (`TRACKER_DB=`) means unset, as
/// in most programs, rather than clap's "a value is required".
const OPTION_ENV: [&str; 6] =
    ["TRACKER_DB", "TRACKER_PIN_DIR", "TRACKER_IFACE", "TRACKER_LOG", "TRACKER_ENTITIES", config::CONFIG_ENV];

/// The rows a listing shows by default in a table; JSON and CSV, for scripts, get every row.
pub const TABLE_LIMIT: u32 = 100;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: attach to the interface, count flows, enforce blocks (needs root).
    #[command(long_about = "Loads the eBPF programs, attaches XDP to the interface's ingress and \
a TC classifier to its egress, applies the block rules stored in the database, and writes flows \
to the database every --sweep-interval. Stops cleanly on Ctrl-C or SIGTERM, writing what is \
left. Maps stay pinned, so blocks keep working even if the daemon dies.")]
    Run(run::RunArgs),
    /// List flows: who each device talked to, by what name, with packets and bytes each way.
    #[command(long_about = "Lists flows, biggest first. `name` is the name the device itself used \
for the server: the DNS answer it received for that address just before (name_source dns, with \
the CNAME target in `cname`), or, without DNS (DNS over HTTPS, a cached or hard-coded address), \
the server name of its TLS handshake (sni) or the Host of its HTTP request (http). Local \
addresses (the VPN's subnets, private, loopback, link-local, CGNAT, ULA) are `local` and never \
named; no reverse DNS is ever used.")]
    Flows(FlowsArgs),
    /// The DNS query log: every query a device made, with the response it got.
    #[command(long_about = "The DNS query log, newest first: time, device, question name and \
type, response code (`(no response)` when none was seen), the answer (CNAME chain > addresses), \
its TTL and the resolver asked. Queries are read from the tunnel itself, so this works whether \
the resolver runs on the VPN host or further away. Names are shown as received, with bytes \
outside printable ASCII escaped as \\DDD.\n\nExamples:\n  tracker dns --since 1h\n  \
tracker dns --domain example.com --format json")]
    Dns(dns::DnsArgs),
    /// How often each name was queried: `tracker domains --since 7d --min-queries 10`.
    #[command(long_about = "Counts DNS queries per name over a period, most queried first. \
`--group registrable` adds up every name under the same registrable domain (by the public \
suffix list: a.b.example.co.uk counts for example.co.uk).\n\nExamples:\n  \
tracker domains --min-queries 10\n  tracker domains --since 30d --group registrable --format csv")]
    Domains(dns::DomainsArgs),
    /// The answers in one go: domains, companies, services, encryption, protocols, devices.
    #[command(long_about = "A report over a period (default: the last 7 days), in sections: \
the names queried at least --min-queries times; the share of connections and bytes per company \
(a name no entry of the company table knows counts for its registrable domain; local peers and \
flows without a name are lines of their own), and again without the companies --exclude names; \
the CDNs and clouds that carried other companies' names; the apps and SDKs behind the names; \
encrypted versus unencrypted; application protocols and transports; devices. A connection is \
one flow that started in the period, with every byte it carried.\n\nExamples:\n  \
tracker report\n  tracker report --since 30d --exclude Apple,Google,Amazon\n  \
tracker report --client phone --format json\n  tracker report --html report.html   \
(one page with charts; opens offline, from a file)\n  tracker report --block-window 12   \
(what rule 12 stopped: `tracker experiment --help`)")]
    Report(report::ReportArgs),
    /// The companies tracker knows, with how many names and connections matched each.
    #[command(long_about = "Lists the company table in use (tracker's own, with your file from \
--entities over it), with the names flows were given that matched each company and their \
connections. `--unmatched` lists instead the names no company matches, most used first: what to \
add to your file.\n\nExamples:\n  tracker companies\n  tracker companies --unmatched --since 30d")]
    Companies(entities::EntitiesArgs),
    /// The apps and SDKs tracker knows, with how many names and connections matched each.
    Services(entities::EntitiesArgs),
    /// The devices (WireGuard peers): public key, allowed IPs, your name for it, flows, bytes.
    Devices(ListArgs),
    /// Import capture files (pcap, pcapng) into the database, counted as the kernel counts.
    #[command(
        name = "import-pcap",
        long_about = "Reads capture files (from a VPN server's dumpcap, PCAPdroid on a phone, a \
home router) through the same naming, DNS log, companies and store as live capture, with the \
capture's own timestamps. Every packet is counted by the kernel program's own parser and \
accounting, so an import of a capture of wg0 matches what the daemon counted live. Rows are \
filed under a source (--source, default the file's name), shown with `--source NAME` on flows, \
dns, domains and report, and never mixed with live data.\n\n\
Importing the same bytes again adds nothing: a complete earlier import is said and skipped; an \
interrupted one is read again and its rows are matched, not counted twice. A damaged file keeps \
what came before the damage; the error names the packet and byte offset, and the exit status is \
non-zero.\n\nExamples:\n  tracker import-pcap phone.pcapng --source phone-week48\n  \
tracker report --source phone-week48\n  tracker import-pcap router.pcap --client-net 192.168.1.0/24"
    )]
    ImportPcap(import::ImportArgs),
    /// Imported captures: source, file, packets, time span, whether it was read whole.
    Sources(ListArgs),
    /// Your own SQL, read-only, over the database as tracker reads it: `tracker sql "SELECT ..."`.
    #[command(long_about = "Runs one SQL statement that only reads, over the tables and views \
described in README (The database), and prints its rows as a table, JSON or CSV. Flows and DNS \
queries of days that ended two days ago are packed into one blob a device and day; `flows`, \
`dns_queries` and `dns_answers` show them here as rows, as they do for tracker itself, while the \
sqlite3 shell sees only the rows not packed yet. A statement that would change anything is \
refused before it runs.\n\nExamples:\n  \
tracker sql \"SELECT remote, sum(bytes_up + bytes_down) AS bytes FROM flows GROUP BY remote ORDER BY bytes DESC LIMIT 10\"\n  \
tracker sql \"SELECT qname, count(*) AS n FROM dns_queries WHERE rcode = 'NXDOMAIN' GROUP BY qname\" --format csv")]
    Sql(SqlArgs),
    /// Give a device a name, used by reports and by --client: `tracker name-device 10.77.0.2 phone`.
    #[command(name = "name-device")]
    NameDevice(entities::NameDeviceArgs),
    /// Block an address or network (CIDR) in the kernel, to and from every device.
    #[command(
        name = "block-ip",
        long_about = "Blocks an IPv4/IPv6 address or CIDR: packets to it \
(from the devices) and from it (to the devices) are dropped in the kernel. The rule is stored in \
the database and applied to the running daemon's kernel maps at once; if no daemon is running it \
takes effect when `tracker run` starts.\n\nExamples:\n  tracker block-ip 203.0.113.7\n  \
tracker block-ip 198.51.100.0/24 --comment \"ad network\"\n  tracker block-ip 2001:db8::/32"
    )]
    BlockIp(block::BlockArgs),
    /// Remove a block rule added with block-ip.
    #[command(name = "unblock-ip")]
    UnblockIp(block::UnblockArgs),
    /// Refuse a domain and every name under it, in the kernel: `tracker block-domain example.com`.
    #[command(
        name = "block-domain",
        long_about = "Refuses DNS queries for a domain and every name under it: the kernel \
answers a device's query with NXDOMAIN itself (a query over TCP gets a reset), so apps fail at \
once instead of timing out, whichever resolver the device asks and whether or not the daemon \
runs. example.com covers www.example.com and a.b.example.com, not notexample.com. Names are \
matched in any case; give an internationalised name in its xn-- form.\n\n\
Examples:\n  tracker block-domain example.com\n  \
tracker block-domain ads.example.net --client phone --for 30m\n  \
tracker block-domain tracker.example --comment \"what breaks?\""
    )]
    BlockDomain(names::BlockDomainArgs),
    /// Refuse every domain of a company in the entity table: `tracker block-company Braze`.
    #[command(
        name = "block-company",
        long_about = "Refuses every domain the entity table lists for a company, and those of its \
services (`tracker companies` shows them), as block-domain does for one. The domains are taken \
when the rule is made; blocking the company again takes in changes to the table.\n\n\
Examples:\n  tracker block-company Braze\n  tracker block-company bytedance --client phone --for 1h"
    )]
    BlockCompany(names::BlockEntityArgs),
    /// Refuse every domain of a service (app, SDK) in the entity table: `tracker block-service TikTok`.
    #[command(
        name = "block-service",
        long_about = "Refuses every domain the entity table lists for a service (`tracker services` \
shows them), as block-domain does for one.\n\nExamples:\n  tracker block-service TikTok\n  \
tracker block-service tiktok --client laptop --for 2d"
    )]
    BlockService(names::BlockEntityArgs),
    /// Refuse every domain of a blocklist file (hosts format or one domain a line).
    #[command(
        name = "import-blocklist",
        long_about = "Reads a blocklist and refuses every domain in it, as one rule named after the \
file (or --name): hosts format (`0.0.0.0 ads.example.com`, `127.0.0.1 x`, `:: x`, several names \
to a line) or one domain a line. `#` starts a comment; blank lines, repeats and the host's own \
names (localhost) are skipped and counted; every malformed line is printed on stderr with its \
line number and why, and left out. A file that cannot be read changes nothing. Importing a list \
under the same name again replaces its domains; `unblock-list NAME` removes it whole.\n\n\
Examples:\n  tracker import-blocklist /etc/tracker/ads.hosts\n  \
tracker import-blocklist trackers.txt --name trackers --client phone"
    )]
    ImportBlocklist(names::ImportBlocklistArgs),
    /// Remove a domain rule added with block-domain (`--client` for a device's rule).
    #[command(name = "unblock-domain")]
    UnblockDomain(names::UnblockNameArgs),
    /// Remove a company rule added with block-company.
    #[command(name = "unblock-company")]
    UnblockCompany(names::UnblockNameArgs),
    /// Remove a service rule added with block-service.
    #[command(name = "unblock-service")]
    UnblockService(names::UnblockNameArgs),
    /// Remove an imported blocklist, all its domains at once: `tracker unblock-list ads`.
    #[command(name = "unblock-list")]
    UnblockList(names::UnblockNameArgs),
    /// Stop encrypted DNS that walks around the name rules (DoT, DoQ, DoH); off by default.
    #[command(
        name = "block-dns-bypass",
        long_about = "Name rules work on the DNS queries the VPN host sees: plain DNS, whichever \
resolver a device asks. A device or app that resolves names over an encrypted channel walks \
around them. This rule stops the encrypted channels the host can recognise, so apps fall back to \
plain DNS, where the name rules hold:\n\n\
- DNS over TLS and DNS over QUIC (port 853, TCP and UDP): a device's connection is reset at once \
(TCP) or its datagrams dropped (QUIC), in the kernel;\n\
- DNS over HTTPS: the public resolvers' DoH names (dns.google, cloudflare-dns.com, \
dns.quad9.net, dns.nextdns.io, ... as tracker ships them) are refused as block-domain refuses a \
name, and so is Firefox's canary domain use-application-dns.net, which tells Firefox to keep its \
default DoH off.\n\n\
What it breaks: a phone whose Private DNS is set to a hostname (Android: Settings, Network, \
Private DNS) resolves nothing until Private DNS is turned off or set to automatic; an app that \
insists on its own encrypted resolver fails. Firefox's and Chrome's secure DNS in their default \
modes, and Private DNS on automatic, fall back to plain DNS.\n\n\
What it cannot stop: DoH to an address an app has built in (https://1.1.1.1/dns-query) looks \
like any HTTPS connection; a VPN inside the VPN hides everything.\n\n\
Off by default because it changes how devices resolve names: someone who turned encrypted DNS \
on chose it, and should know before it stops. Undo with `tracker unblock-dns-bypass`.\n\n\
Examples:\n  tracker block-dns-bypass --dry-run   what it would have stopped this week\n  \
tracker block-dns-bypass\n  tracker block-dns-bypass --client phone --for 1h\n  \
tracker unblock-dns-bypass"
    )]
    BlockDnsBypass(bypass::BlockBypassArgs),
    /// Remove the rule added with block-dns-bypass (`--client` for a device's rule).
    #[command(name = "unblock-dns-bypass")]
    UnblockDnsBypass(bypass::UnblockBypassArgs),
    /// List block rules: kind, origin, device, created, expires, hits (dropped or refused).
    #[command(long_about = "Lists the active block rules: id (the DNS log's `blocked_by`), kind \
(ip, domain, company, service, list, dns-bypass), the rule, its origin (manual, or the company, service or \
list it came from), the device it holds for (or all), how many domains it covers, hits (packets \
dropped for an address rule, DNS queries refused for a name rule, counted across restarts and \
reboots), the last hit, when it was made, when it ends and the time left. `--expired` adds the \
rules that ended, with when and why (unblocked or expired).\n\nExamples:\n  tracker blocks\n  \
tracker blocks --expired --kind domain\n  tracker blocks --format json")]
    Blocks(block::BlocksArgs),
    /// Block a company, service or domain for a while, then see what broke: `tracker experiment Braze --for 30m`.
    #[command(long_about = "\"Which apps stop working if I block this?\" Blocks a company, a \
service or a domain for a while, exactly as block-company, block-service or block-domain with \
--for do (the kernel refuses its names, and the block ends by itself), and says how to see the \
report. Use the devices as usual meanwhile. The report (`tracker report --block-window RULE`, \
or `tracker experiment --report RULE`, at any time: while it runs it covers the time so far) \
puts what happened while the rule was on next to the same length of time just before it: each \
name that kept being asked for and was refused (queries, devices, retries per minute), the \
companies and services those names belong to, the connections to its names or addresses and \
how many failed, and every device's flows, bytes and queries before and during. RULE is the \
rule's id or its text as `tracker blocks --expired` shows it.\n\n\
Examples:\n  tracker experiment Braze --for 30m               a company, its services' domains too\n  \
tracker experiment TikTok --for 1h --client phone\n  \
tracker experiment api.mparticle.com --for 10m   a domain and the names under it\n  \
tracker report --block-window 12                 what broke while rule 12 was on\n  \
tracker report --block-window Braze --format json")]
    Experiment(experiment::ExperimentArgs),
    /// Where to open the dashboard from the phone: its addresses and a QR code, and who may.
    #[command(long_about = "The daemon serves a dashboard (unless started with --no-dashboard): \
the first page shows, for the last 24 hours, 7 or 30 days and all devices or one, the connections \
and bytes, a timeline, the names looked up, companies (with or without the big players), services, \
encryption, protocols, what was blocked, and the devices. It listens on the VPN interface's own \
addresses, reachable through the tunnel only, and on localhost; only the WireGuard peers and this \
host get in. This prints its addresses, and a QR code of one to scan with the phone's camera.\n\n\
Blocking and unblocking from the dashboard (a block's preview, then for good, 30 minutes, an hour or \
until midnight; the experiments page, with what broke) need a password: set it once with \
--set-password, then log in on the dashboard. A login lasts 12 hours, or until the daemon restarts; \
five wrong passwords in a minute make it wait. Every change is the block commands' own, in the \
kernel at once.\n\n\
Examples:\n  tracker dashboard\n  tracker dashboard --light-terminal   (a terminal with a light background)\n  \
tracker dashboard --set-password     (asks for it twice, without echo)\n  \
printf '%s\\n' \"$PW\" | tracker dashboard --set-password   (from a script)")]
    Dashboard(dashboard::DashboardArgs),
    /// Is the daemon running and attached? Kernel counters, database size.
    Status(ListArgs),
    /// Remove flows and DNS queries past their retention now (the daemon does it every hour).
    #[command(long_about = "Removes the live interface's flows and DNS queries older than --keep-raw \
(30 days), and the hourly and daily totals the reports read older than --keep-raw and --keep-daily \
(a year): reports over any period within a year keep working once the rows are gone. Imported \
captures are never pruned (remove them yourself). The daemon prunes with its own --keep-raw and \
--keep-daily every hour; this does it now and prints the database's size.\n\nExamples:\n  \
tracker prune\n  tracker prune --keep-raw 90d --keep-daily 730d\n  tracker prune --vacuum   \
(once, for a database made before tracker shrank files)")]
    Prune(prune::PruneArgs),
    /// Print the database schema (SQL with a comment on every column) for querying it directly.
    Schema,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format: table for people, json or csv for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// Only flows active since then: a duration back from now (30m, 1h, 7d), a date
    /// (2026-11-26, midnight UTC) or a time (2026-11-26T08:00:00Z, 2026-11-26T08:00:00+01:00;
    /// UTC without an offset).
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// At most this many flows (0 = all). Default: 100 in a table, all in JSON and CSV.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Only this device: its name (`tracker name-device`), its public key, or a tunnel address.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub list: ListArgs,
}

/// Which rows a read command shows: the live interface's, or one import's, never both.
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArg {
    /// Show an imported capture (`tracker import-pcap --source NAME`; `tracker sources` lists
    /// them) instead of the live interface. A duration in --since then counts back from the
    /// capture's last packet, so a week-old capture shows its own week.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
}

impl SourceArg {
    /// The source's id, and `--since` (a duration back from now, or from an import's last
    /// packet) as unix ms.
    pub fn resolve(&self, store: &Store, since: Option<&str>) -> Result<(i64, Option<i64>)> {
        let source = store.source(self.source.as_deref())?;
        let end = source.end_ms.unwrap_or_else(timefmt::now_ms);
        let since_ms = since.map(|s| timefmt::parse_since_at(s, end)).transpose()?;
        Ok((source.id, since_ms))
    }
}

/// Parses arguments, runs the command, prints errors with their causes.
pub fn main() -> ExitCode {
    for name in empty_option_env(std::env::vars_os()) {
        // SAFETY: single-threaded at this point (the first thing `main` does, before any thread
        // or runtime starts), so no other code can read the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    let (args, origins) = match config::apply(std::env::args_os().collect(), &|k| std::env::var(k).ok()) {
        Ok(found) => found,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tracker: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if let Some(note) = config::explain(&e, &origins) {
                let _ = writeln!(std::io::stderr(), "{note}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if !matches!(cli.command, Command::Run(_)) {
        // `tracker flows | head -1`: a closed pipe ends the command quietly, as for any Unix
        // filter, instead of a "Broken pipe" error. The daemon keeps Rust's default (ignored),
        // so a closed log pipe never kills it.
        // SAFETY: setting a signal's disposition to its default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Run(ref args) => run::run(&cli.global, args),
        Command::Flows(ref args) => flows(&cli.global, args),
        Command::Dns(ref args) => dns::dns(&cli.global, args),
        Command::Domains(ref args) => dns::domains(&cli.global, args),
        Command::Report(ref args) => report::run(&cli.global, args),
        Command::Companies(ref args) => entities::companies(&cli.global, args),
        Command::Services(ref args) => entities::services(&cli.global, args),
        Command::Devices(ref args) => entities::devices(&cli.global, args),
        Command::NameDevice(ref args) => entities::name_device(&cli.global, args),
        Command::ImportPcap(ref args) => import::import_pcap(&cli.global, args),
        Command::Sources(ref args) => import::sources(&cli.global, args),
        Command::Sql(ref args) => sql(&cli.global, args),
        Command::BlockIp(ref args) => block::block_ip(&cli.global, args),
        Command::UnblockIp(ref args) => block::unblock_ip(&cli.global, args),
        Command::BlockDomain(ref args) => names::block_domain(&cli.global, args),
        Command::BlockCompany(ref args) => names::block_company(&cli.global, args),
        Command::BlockService(ref args) => names::block_service(&cli.global, args),
        Command::ImportBlocklist(ref args) => names::import_blocklist(&cli.global, args),
        Command::UnblockDomain(ref args) => names::unblock_domain(&cli.global, args),
        Command::UnblockCompany(ref args) => names::unblock_company(&cli.global, args),
        Command::UnblockService(ref args) => names::unblock_service(&cli.global, args),
        Command::UnblockList(ref args) => names::unblock_list(&cli.global, args),
        Command::BlockDnsBypass(ref args) => bypass::block_dns_bypass(&cli.global, args),
        Command::UnblockDnsBypass(ref args) => bypass::unblock_dns_bypass(&cli.global, args),
        Command::Blocks(ref args) => block::blocks(&cli.global, args),
        Command::Experiment(ref args) => experiment::run(&cli.global, args),
        Command::Dashboard(ref args) => dashboard::dashboard(&cli.global, args),
        Command::Status(ref args) => status(&cli.global, args),
        Command::Prune(ref args) => prune::prune(&cli.global, args),
        Command::Schema => schema(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe is the reader's choice, not a failure (should SIGPIPE be ignored).
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics when stderr is closed (`tracker flows 2>&-`).
            let _ = writeln!(std::io::stderr(), "tracker: {e:#}");
            if let Some(hint) = store::damaged_hint(&e, &cli.global.db) {
                let _ = writeln!(std::io::stderr(), "tracker: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The option variables ([`OPTION_ENV`]) set to the empty string: treated as unset.
fn empty_option_env(vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Vec<&'static str> {
    let empty: Vec<std::ffi::OsString> = vars.filter(|(_, v)| v.is_empty()).map(|(k, _)| k).collect();
    OPTION_ENV.into_iter().filter(|name| empty.iter().any(|k| k == name)).collect()
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<csv::Error>().is_some_and(
                |e| matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe),
            )
            || c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind)
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Opens the store for a read command: read-only, never creating, migrating or changing it.
/// Not finding the database is an error that says how to get one, rather than an empty listing
/// that hides a wrong --db.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// One statement that only reads (SELECT, WITH ... SELECT, EXPLAIN, PRAGMA that reads).
    pub statement: String,
    #[command(flatten)]
    pub list: ListArgs,
}

fn sql(global: &Global, args: &SqlArgs) -> Result<()> {
    let store = open_existing(global)?;
    let answer = crate::query::sql::run(&store, &args.statement)?;
    let columns: Vec<&str> = answer.columns.iter().map(String::as_str).collect();
    output::render(&mut std::io::stdout().lock(), args.list.format, &columns, &answer.rows)
}

fn open_existing(global: &Global) -> Result<Store> {
    Store::open_reader(&global.db)
}

/// The client addresses `--client` stands for (a device's name, public key or a tunnel
/// address), or `None` without `--client`.
pub fn client_addresses(store: &Store, client: Option<&str>) -> Result<Option<ClientFilter>> {
    client.map(|c| store.client_filter(c)).transpose()
}

/// The row limit of a listing: `--limit N` (0 = all) when given; otherwise [`TABLE_LIMIT`] in a
/// table and everything in JSON and CSV, so a script never sums a silently cut list.
pub fn effective_limit(limit: Option<u32>, format: Format) -> Option<u32> {
    match (limit, format) {
        (Some(0), _) => None,
        (Some(n), _) => Some(n),
        (None, Format::Table) => Some(TABLE_LIMIT),
        (None, Format::Json | Format::Csv) => None,
    }
}

/// The note on stderr when a table was cut by the default limit: what is shown, how many there
/// are, and how to see all. `None` when nothing was left out or the user chose the limit.
pub fn cut_note(shown: usize, total: u64, what: &str, limit: Option<u32>, format: Format) -> Option<String> {
    (format == Format::Table && limit.is_none() && (shown as u64) < total)
        .then(|| format!("showing {shown} of {total} {what}; --limit 0 shows all"))
}

/// Writes [`cut_note`]'s note, if any, to stderr (ignoring a closed stderr).
pub fn say_cut(
    shown: usize,
    total: impl FnOnce() -> Result<u64>,
    what: &str,
    limit: Option<u32>,
    format: Format,
) -> Result<()> {
    let cut = effective_limit(limit, format);
    if cut.is_some_and(|n| shown as u64 >= u64::from(n))
        && let Some(note) = cut_note(shown, total()?, what, limit, format)
    {
        let _ = writeln!(std::io::stderr(), "{note}");
    }
    Ok(())
}

fn flows(global: &Global, args: &FlowsArgs) -> Result<()> {
    // Bad input is refused before the database is opened.
    if let Some(s) = &args.since {
        timefmt::parse_since(s)?;
    }
    let store = open_existing(global)?;
    let (source, since_ms) = args.source.resolve(&store, args.since.as_deref())?;
    let format = args.list.format;
    let clients = client_addresses(&store, args.client.as_deref())?.map(|c| c.addresses);
    let query = FlowQuery { since_ms, limit: effective_limit(args.limit, format), clients, source };
    let rows = store.flows(&query)?;
    // A table shows what a person reads first; CSV carries every field, as JSON does.
    const TABLE: &[&str] = &[
        "client",
        "remote",
        "name",
        "company",
        "app_protocol",
        "protocol",
        "remote_port",
        "packets_up",
        "bytes_up",
        "packets_down",
        "bytes_down",
        "last_seen",
    ];
    const ALL: &[&str] = &[
        "client",
        "remote",
        "name",
        "name_source",
        "protocol",
        "client_port",
        "remote_port",
        "packets_up",
        "bytes_up",
        "packets_down",
        "bytes_down",
        "first_seen",
        "last_seen",
        "cname",
        "remote_class",
        "app_protocol",
        "app_decided",
        "encrypted",
        "company",
        "site",
        "service",
        "served_by",
    ];
    let columns = if format == Format::Table { TABLE } else { ALL };
    output::render(&mut std::io::stdout().lock(), format, columns, &rows)?;
    say_cut(rows.len(), || store.flows_total(&query), "flows", args.limit, format)
}

/// `tracker status`: JSON as [`Status`] serializes it; a table or CSV of its keys and values
/// in the same order.
fn status(global: &Global, args: &ListArgs) -> Result<()> {
    let status = crate::status::gather(&global.db, &PinDir(global.pin_dir.clone()))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &status)?;
            writeln!(out)?;
        }
        Format::Csv | Format::Table => {
            #[derive(serde::Serialize)]
            struct Row {
                key: String,
                value: String,
            }
            let serde_json::Value::Object(fields) = serde_json::to_value(&status)? else {
                unreachable!("a struct serializes as an object")
            };
            let rows: Vec<Row> = fields
                .into_iter()
                .map(|(key, v)| Row {
                    key,
                    value: match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    },
                })
                .collect();
            output::render(&mut out, args.format, &["key", "value"], &rows)?;
        }
    }
    Ok(())
}

/// The migrations are the schema's one definition; printing them documents it exactly.
fn schema() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "-- tracker database schema, version {}", store::schema::VERSION)?;
    writeln!(out, "-- times are unix milliseconds (UTC); addresses are text; counters are totals")?;
    for (i, sql) in store::schema::MIGRATIONS.iter().enumerate() {
        // Each migration's SQL on the line after its heading, whether or not its text starts
        // with a newline (migration 9's, kept in a file of its own, does not).
        writeln!(out, "\n-- migration {}\n{}", i + 1, textwrap_dedent(sql.trim_start_matches('\n')))?;
    }
    Ok(())
}

/// Removes the common leading indentation of the migration SQL, for reading.
fn textwrap_dedent(s: &str) -> String {
    let indent = s.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min();
    let indent = indent.unwrap_or(0);
    s.lines().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect::<Vec<_>>().join("\n")
}

/// A duration flag such as `--sweep-interval 2s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s).with_context(|| format!("`{s}` is not a duration (500ms, 2s, 1m)"))?;
    if d.is_zero() {
        bail!("the duration must be positive");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracker").chain(args.iter().copied()))
    }

    #[test]
    fn since_takes_a_leading_hyphen() {
        let cli = parse(&["flows", "--since", "-1h"]).unwrap();
        let Command::Flows(args) = cli.command else { panic!() };
        assert_eq!(args.since.as_deref(), Some("-1h"));
        for cmd in ["dns", "domains"] {
            assert!(parse(&[cmd, "--since", "-30m"]).is_ok(), "{cmd}");
        }
    }

    #[test]
    fn global_options_have_their_own_heading_and_honest_help() {
        for sub in ["flows", "dns", "status", "block-ip"] {
            let mut cmd = Cli::command();
            cmd.build();
            let help = cmd.find_subcommand_mut(sub).unwrap().render_long_help().to_string();
            let heading = help.find("Global options:").unwrap_or_else(|| panic!("{sub}: {help}"));
            let db = help.find("--db <DB>").unwrap();
            let pins = help.find("--pin-dir <PIN_DIR>").unwrap();
            assert!(db > heading && pins > heading, "{sub}: {help}");
            assert!(!help.contains("created if missing"), "{sub}: {help}");
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Global options:"), "{help}");
    }

    #[test]
    fn empty_option_variables_count_as_unset() {
        let vars = [("TRACKER_DB", ""), ("TRACKER_PIN_DIR", "/x"), ("TRACKER_LOG", ""), ("OTHER", "")]
            .map(|(k, v)| (k.into(), v.into()));
        assert_eq!(empty_option_env(vars.into_iter()), ["TRACKER_DB", "TRACKER_LOG"]);
    }

    #[test]
    fn limits_cut_tables_only() {
        assert_eq!(effective_limit(None, Format::Table), Some(TABLE_LIMIT));
        assert_eq!(effective_limit(None, Format::Json), None);
        assert_eq!(effective_limit(None, Format::Csv), None);
        assert_eq!(effective_limit(Some(0), Format::Table), None);
        assert_eq!(effective_limit(Some(5), Format::Json), Some(5));
        let cli = parse(&["flows", "--format", "json"]).unwrap();
        let Command::Flows(args) = cli.command else { panic!() };
        assert_eq!(effective_limit(args.limit, args.list.format), None);
        assert_eq!(
            cut_note(100, 2345, "flows", None, Format::Table).as_deref(),
            Some("showing 100 of 2345 flows; --limit 0 shows all")
        );
        assert_eq!(cut_note(100, 100, "flows", None, Format::Table), None);
        assert_eq!(cut_note(10, 2345, "flows", Some(10), Format::Table), None, "the user chose the cut");
    }

    #[test]
    fn the_entity_file_is_optional_by_default_required_when_named_and_refused_whole_when_bad() {
        let dir = std::env::temp_dir().join(format!("tracker-cli-entities-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let global =
            |entities: Option<PathBuf>| Global { db: dir.join("t.db"), pin_dir: dir.clone(), entities, config: None };
        let missing = dir.join("missing.toml");
        let err = format!("{:#}", global(Some(missing.clone())).entity_table().unwrap_err());
        assert!(err.contains("reading the entity file") && err.contains("missing.toml"), "{err}");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[service]]\nname = \"S\"\ncompany = \"Nobody\"\ndomains = [\"s.example\"]\n").unwrap();
        let err = format!("{:#}", global(Some(bad)).entity_table().unwrap_err());
        assert!(err.contains("was not used") && err.contains("no company entry is named \"Nobody\""), "{err}");
        let mine = dir.join("mine.toml");
        std::fs::write(&mine, "[[company]]\nname = \"Family\"\ncategory = \"other\"\ndomains = [\"nas.example\"]\n")
            .unwrap();
        let t = global(Some(mine)).entity_table().unwrap();
        assert_eq!(t.company_of("x.nas.example").map(|m| m.entry.name.as_str()), Some("Family"));
        assert_eq!(t.company_of("www.apple.com").map(|m| m.entry.name.as_str()), Some("Apple"), "over tracker's own");
    }

    /// `tracker status` opened the database as a writer: it migrated (and would take over)
    /// whatever --db named.
    #[test]
    fn status_reads_without_writing() {
        let dir = std::env::temp_dir().join(format!("tracker-cli-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("other.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE customers (id INTEGER)").unwrap();
        drop(c);
        let before = std::fs::read(&db).unwrap();
        let global = Global { db: db.clone(), pin_dir: dir.join("no-pins"), entities: None, config: None };
        let err = format!("{:#}", status(&global, &ListArgs { format: Format::Json }).unwrap_err());
        assert!(err.contains("another program's SQLite database"), "{err}");
        assert_eq!(std::fs::read(&db).unwrap(), before);
        let err = format!("{:#}", open_existing(&global).err().unwrap());
        assert!(err.contains("tracker leaves it alone"), "{err}");
    }
}
