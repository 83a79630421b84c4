//! The configuration file (`/etc/tracker/tracker.toml`, or `--config FILE`): defaults for the
//! options every command takes (top level) and for `tracker run`'s (the `[run]` table), which
//! the command line and the options' environment variables override. Its keys are the long
//! options themselves, read from the CLI's own definition: one source of truth, and every
//! option a flag has is a key.
//!
//! The file is turned into options placed after the user's arguments, only for options the
//! user did not give (on the command line or in their environment variable), so clap parses and
//! checks one command line as always; an error in a value the file gave names the file's line.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{ArgAction, CommandFactory as _};

use super::Cli;

/// Read when it exists and no `--config` or `TRACKER_CONFIG` names another.
pub const DEFAULT_CONFIG: &str = "/etc/tracker/tracker.toml";
pub const CONFIG_ENV: &str = "TRACKER_CONFIG";
/// The table of `tracker run`'s options.
const RUN_TABLE: &str = "run";

/// A file that cannot be used, said with its path and line: nothing is run.
#[derive(Debug, PartialEq, Eq)]
pub struct BadConfig(pub String);

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadConfig {}

/// One option the file may set.
#[derive(Clone, Debug)]
struct Known {
    /// `--db`'s `db`.
    long: String,
    env: Option<String>,
    /// A switch (`--keep-attached`): the key takes `true` or `false`.
    flag: bool,
    /// Repeatable (`--local-net`): the key takes a list too.
    many: bool,
}

/// The options of the top level (global) and of `run`, from clap's definition.
fn known() -> (Vec<Known>, Vec<Known>) {
    let cmd = Cli::command();
    let of = |args: Vec<&clap::Arg>| -> Vec<Known> {
        args.into_iter()
            .filter_map(|a| {
                let long = a.get_long()?;
                // Help, version and the file's own option are not settings.
                if matches!(a.get_action(), ArgAction::Help | ArgAction::HelpLong | ArgAction::Version)
                    || long == "config"
                {
                    return None;
                }
                Some(Known {
                    long: long.to_owned(),
                    env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
                    flag: matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse),
                    many: matches!(a.get_action(), ArgAction::Append),
                })
            })
            .collect()
    };
    let global = of(cmd.get_arguments().filter(|a| a.is_global_set()).collect());
    let run = cmd.find_subcommand(RUN_TABLE).map(|r| of(r.get_arguments().collect())).unwrap_or_default();
    let run = run.into_iter().filter(|k| !global.iter().any(|g| g.long == k.long)).collect();
    (global, run)
}

/// The config file to read: `--config FILE` (or `--config=FILE`) on the command line,
/// `$TRACKER_CONFIG`, else [`DEFAULT_CONFIG`] when it exists. `required` when named.
fn chosen(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = env(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    Path::new(DEFAULT_CONFIG).exists().then(|| (PathBuf::from(DEFAULT_CONFIG), false))
}

/// The 1-based line where `key` is set in `table` (`None`: the top level), for messages.
fn line_of(text: &str, table: Option<&str>, key: &str) -> usize {
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(name.trim().to_owned());
            continue;
        }
        let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if current.as_deref() == table && k == key {
            return i + 1;
        }
    }
    1
}

/// Where each option the file gave came from, for clap's errors: `--db` -> "FILE:3".
pub type Origins = BTreeMap<String, String>;

/// The command line with the file's settings added, and where each came from. `args` is the
/// process's whole argv; `env` reads the environment.
pub fn apply(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<(Vec<OsString>, Origins), BadConfig> {
    let Some((path, required)) = chosen(&args, env) else { return Ok((args, Origins::new())) };
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok((args, Origins::new())),
        Err(e) => return Err(BadConfig(format!("cannot read the configuration file {shown}: {e}; nothing was run"))),
    };
    with_text(args, env, &text, &shown)
}

/// [`apply`] on the file's `text`, named `shown` in messages.
pub(crate) fn with_text(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    text: &str,
    shown: &str,
) -> Result<(Vec<OsString>, Origins), BadConfig> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        BadConfig(format!("{shown}: not valid TOML: {}; nothing was run", e.to_string().trim()))
    })?;
    // The user's options: the words before a `--` (those after it are not options).
    let given: Vec<String> =
        args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).take_while(|a| a != "--").collect();
    let is_run = given.iter().any(|a| a == RUN_TABLE);
    let (global, run) = known();
    let mut extra: Vec<OsString> = Vec::new();
    let mut origins = Origins::new();
    let mut take = |table: Option<&str>, entries: &toml::Table, known: &[Known]| -> Result<(), BadConfig> {
        for (key, value) in entries {
            let line = line_of(text, table, key);
            let at = format!("{shown}:{line}");
            let place = table.map_or(String::new(), |t| format!(" in [{t}]"));
            let Some(k) = known.iter().find(|k| &k.long == key) else {
                let keys: Vec<&str> = known.iter().map(|k| k.long.as_str()).collect();
                return Err(BadConfig(format!(
                    "{at}: `{key}` is not a setting{place}; the settings there are: {}; nothing was run",
                    keys.join(", ")
                )));
            };
            let on_line = given.iter().any(|a| *a == format!("--{key}") || a.starts_with(&format!("--{key}=")));
            let in_env = k.env.as_deref().and_then(env).is_some_and(|v| !v.is_empty());
            if on_line || in_env {
                continue;
            }
            let words = values(value, k).map_err(|why| BadConfig(format!("{at}: `{key}` {why}; nothing was run")))?;
            let before = extra.len();
            if k.flag {
                if words.first().is_some_and(|w| w == "true") {
                    extra.push(format!("--{key}").into());
                }
            } else {
                // One word, `--key=value`: a value that starts with `-` stays a value.
                extra.extend(words.into_iter().map(|w| format!("--{key}={w}").into()));
            }
            // A switch set to false or an empty list gives no option, so nothing to trace back.
            if extra.len() > before {
                origins.insert(format!("--{key}"), at);
            }
        }
        Ok(())
    };
    let mut top = toml::Table::new();
    for (key, value) in &table {
        match (key.as_str(), value) {
            (RUN_TABLE, toml::Value::Table(t)) => {
                if is_run {
                    take(Some(RUN_TABLE), t, &run)?;
                }
            }
            _ => {
                top.insert(key.clone(), value.clone());
            }
        }
    }
    take(None, &top, &global)?;
    // After a `--` the rest is not options: the file's go before it.
    let mut args = args;
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    args.splice(at..at, extra);
    Ok((args, origins))
}

/// A TOML value as the words of its option, or why it cannot be one.
fn values(v: &toml::Value, k: &Known) -> Result<Vec<String>, String> {
    let word = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) if k.flag => Ok(b.to_string()),
            other => Err(format!("takes a string or a number, not {}", other.type_str())),
        }
    };
    match v {
        toml::Value::Boolean(b) if k.flag => Ok(vec![b.to_string()]),
        _ if k.flag => Err(format!("is a switch: write `{} = true` or `false`", k.long)),
        toml::Value::Array(items) if k.many => items.iter().map(word).collect(),
        toml::Value::Array(_) => Err("takes one value, not a list".into()),
        other => word(other).map(|w| vec![w]),
    }
}

/// Names the file's line in clap's error when the option it failed on came from the file.
pub fn explain(e: &clap::Error, origins: &Origins) -> Option<String> {
    let arg = e.get(clap::error::ContextKind::InvalidArg)?.to_string();
    let long = arg.split([' ', '=']).next()?;
    origins.get(long).map(|at| format!("(the value of {long} is from the configuration file, {at})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracker-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tracker.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Vec<String>, BadConfig> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let look = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let argv = std::iter::once("tracker").chain(args.iter().copied()).map(OsString::from).collect();
        apply(argv, &look).map(|(a, _)| a.into_iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect())
    }

    const FILE: &str = r#"
# tracker's settings
db = "/srv/tracker/tracker.db"

[run]
iface = "wg1"
sweep-interval = "5s"
local-net = ["192.0.2.0/24", "198.51.100.0/24"]
keep-attached = true
keep-raw = "90d"
"#;

    #[test]
    fn the_file_fills_what_the_command_line_and_environment_leave_out() {
        let f = write("good", FILE);
        let f = f.to_str().unwrap();
        let got = run(&["--config", f, "run", "--iface", "wg0"], &[]).unwrap();
        assert_eq!(
            got,
            [
                "--config",
                f,
                "run",
                "--iface",
                "wg0",
                "--keep-attached",
                "--keep-raw=90d",
                "--local-net=192.0.2.0/24",
                "--local-net=198.51.100.0/24",
                "--sweep-interval=5s",
                "--db=/srv/tracker/tracker.db"
            ]
        );
        // Other commands take the top level only; the environment overrides the file.
        let got = run(&["flows"], &[(CONFIG_ENV, f), ("TRACKER_DB", "/tmp/x.db")]).unwrap();
        assert_eq!(got, ["flows"]);
        let got = run(&["flows", "--", "x"], &[(CONFIG_ENV, f)]).unwrap();
        assert_eq!(got, ["flows", "--db=/srv/tracker/tracker.db", "--", "x"]);
        // Words after `--` are not options: the file's `--db` still counts.
        let got = run(&["flows", "--", "--db"], &[(CONFIG_ENV, f)]).unwrap();
        assert_eq!(got, ["flows", "--db=/srv/tracker/tracker.db", "--", "--db"]);
        // A value that looks like an option is still the value.
        let f2 = write("dash", "db = \"--help\"\n");
        let argv = ["tracker", "--config", f2.to_str().unwrap(), "flows"].map(OsString::from).to_vec();
        let (args, _) = apply(argv, &|_| None).unwrap();
        let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap();
        assert_eq!(cli.global.db, PathBuf::from("--help"));
        // The whole result parses as one command line.
        let argv = ["tracker", "--config", f, "run"].map(OsString::from).to_vec();
        let (args, _) = apply(argv, &|_| None).unwrap();
        let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap();
        assert_eq!(cli.global.db, PathBuf::from("/srv/tracker/tracker.db"));
    }

    #[test]
    fn a_bad_file_is_refused_with_its_line_and_reason() {
        let why = |name: &str, text: &str| {
            let f = write(name, text);
            run(&["--config", f.to_str().unwrap(), "run"], &[]).unwrap_err().0
        };
        let e = why("unknown", "db = \"/x\"\n\n[run]\nifac = \"wg0\"\n");
        assert!(e.contains("tracker.toml:4: `ifac` is not a setting in [run]") && e.contains("iface"), "{e}");
        let e = why("syntax", "db = \n");
        assert!(e.contains("not valid TOML") && e.contains("line 1"), "{e}");
        let e = why("flag", "[run]\nkeep-attached = \"yes\"\n");
        assert!(e.contains(":2: `keep-attached` is a switch"), "{e}");
        let e = why("list", "[run]\niface = [\"a\", \"b\"]\n");
        assert!(e.contains("takes one value, not a list"), "{e}");
        let e = why("table", "db = { path = \"x\" }\n");
        assert!(e.contains(":1: `db` takes a string or a number, not table"), "{e}");
        // A file named but missing is an error; the default one may be missing.
        let e = run(&["--config", "/nonexistent/tracker.toml", "flows"], &[]).unwrap_err().0;
        assert!(e.contains("cannot read the configuration file /nonexistent/tracker.toml"), "{e}");
    }
}
