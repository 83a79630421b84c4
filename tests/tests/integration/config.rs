//! The configuration file through the real binary: a setting from the file is used, a flag or
//! its environment variable wins over it, and a bad file or a bad value in it is refused with
//! the file's line, nothing run. No root needed.

use anyhow::Result;
use serde_json::Value;

use tracker_tests::tracker_bin;

use crate::common::{Scratch, run_cli};

fn tracker(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(tracker_bin());
    c.args(args).env_remove("TRACKER_DB").env_remove("TRACKER_CONFIG").env_remove("TRACKER_PIN_DIR");
    c
}

#[test]
fn the_file_sets_defaults_flags_win_and_bad_lines_are_named() -> Result<()> {
    let scratch = Scratch::new("config")?;
    let (file, db) = (scratch.path("tracker.toml"), scratch.path("from-file.db"));
    let pins = scratch.path("pins");
    std::fs::write(&file, format!("# settings\ndb = \"{}\"\npin-dir = \"{}\"\n", db.display(), pins.display()))?;
    let config = file.to_str().unwrap();

    let ran = run_cli(tracker(&["--config", config, "status", "--format", "json"]))?;
    assert!(ran.exited_ok(), "{}", ran.describe());
    let s: Value = serde_json::from_str(&ran.stdout)?;
    assert_eq!(s["db"], db.to_str().unwrap(), "the file's db: {s}");
    let flag = scratch.path("flag.db");
    let ran = run_cli(tracker(&["--config", config, "--db", flag.to_str().unwrap(), "status", "--format", "json"]))?;
    let s: Value = serde_json::from_str(&ran.stdout)?;
    assert_eq!(s["db"], flag.to_str().unwrap(), "the flag wins: {s}");
    let mut env = tracker(&["status", "--format", "json"]);
    env.env("TRACKER_CONFIG", config).env("TRACKER_DB", "/tmp/from-env.db");
    let s: Value = serde_json::from_str(&run_cli(env)?.stdout)?;
    assert_eq!(s["db"], "/tmp/from-env.db", "the environment variable wins: {s}");

    // A key that is no setting, and a value the option refuses: the line, nothing run.
    std::fs::write(&file, "db = \"/tmp/x.db\"\n[run]\nsweep-intervall = \"2s\"\n")?;
    let ran = run_cli(tracker(&["--config", config, "run"]))?;
    assert_eq!(ran.status.and_then(|s| s.code()), Some(2), "{}", ran.describe());
    assert!(ran.stderr.contains("tracker.toml:3: `sweep-intervall` is not a setting in [run]"), "{}", ran.describe());
    std::fs::write(&file, "[run]\nsweep-interval = \"soon\"\n")?;
    let ran = run_cli(tracker(&["--config", config, "run"]))?;
    assert!(ran.exited_nonzero(), "{}", ran.describe());
    assert!(ran.stderr.contains("soon") && ran.stderr.contains("tracker.toml:2"), "{}", ran.describe());
    Ok(())
}
