//! Puts the freshly built `tracker` on PATH: a symlink /usr/local/bin/tracker -> the absolute
//! path of target/release/tracker, so README's `tracker run` and `tracker flows` work as
//! written in any shell, from any directory, after `cargo xtask build` or `run`.
//!
//! A link, not a copy: every later release build updates what it points at, so the link is
//! made once and the build stays silent afterwards.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// On PATH in every login shell of Debian (root's and users'), and meant for local installs.
const BIN_DIR: &str = "/usr/local/bin";

/// What [`link`] found and did.
#[derive(Debug, PartialEq)]
pub enum Linked {
    /// There was no `tracker`; the link is new.
    Made,
    /// A link pointed elsewhere (there); it now points at the build.
    Changed(PathBuf),
    /// The link already pointed at the build; nothing was done.
    AlreadyRight,
    /// `tracker` exists and is not a symlink (a real install): left as it is.
    NotALink,
}

/// Makes `bin_dir/tracker` a symlink to `target` (an absolute path) unless it already is one,
/// or is something other than a symlink.
pub fn link(bin_dir: &Path, target: &Path) -> io::Result<Linked> {
    let path = bin_dir.join("tracker");
    let old = match fs::symlink_metadata(&path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(err),
        Ok(meta) if !meta.file_type().is_symlink() => return Ok(Linked::NotALink),
        Ok(_) => Some(fs::read_link(&path)?),
    };
    if old.as_deref() == Some(target) {
        return Ok(Linked::AlreadyRight);
    }
    // A new link beside it, renamed over the old one: `tracker` never goes missing, even for a
    // shell that runs it during the swap.
    let tmp = bin_dir.join(format!(".tracker.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(err) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(old.map_or(Linked::Made, Linked::Changed))
}

/// Links `bin` into /usr/local/bin and says so when something changed or stands in the way.
/// Never fails the build: the binary is still there to run by its path.
pub fn put_on_path(bin: &Path) {
    let bin = fs::canonicalize(bin).unwrap_or_else(|_| bin.to_owned());
    let path = Path::new(BIN_DIR).join("tracker");
    if !tracker_tests::is_root() {
        println!("to put `tracker` on PATH, as root: ln -sfn {} {}", bin.display(), path.display());
        return;
    }
    match link(Path::new(BIN_DIR), &bin) {
        Ok(Linked::AlreadyRight) => {}
        Ok(Linked::Made) => println!("linked {} -> {}", path.display(), bin.display()),
        Ok(Linked::Changed(old)) => {
            println!("linked {} -> {} (it pointed to {})", path.display(), bin.display(), old.display())
        }
        Ok(Linked::NotALink) => println!(
            "left {} alone: it is not a symlink (an installed tracker?); `tracker` may not be \
             this build, which is {}",
            path.display(),
            bin.display()
        ),
        Err(err) => {
            println!("cannot link {} -> {} ({err}); run tracker as {}", path.display(), bin.display(), bin.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("xtask-link-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn makes_then_keeps_then_changes_the_link() {
        let bin_dir = TempDir::new("cycle");
        let (a, b) = (Path::new("/build/a/tracker"), Path::new("/build/b/tracker"));
        let tracker = bin_dir.0.join("tracker");

        assert_eq!(link(&bin_dir.0, a).unwrap(), Linked::Made);
        assert_eq!(fs::read_link(&tracker).unwrap(), a);
        assert_eq!(link(&bin_dir.0, a).unwrap(), Linked::AlreadyRight);
        assert_eq!(link(&bin_dir.0, b).unwrap(), Linked::Changed(a.to_owned()));
        assert_eq!(fs::read_link(&tracker).unwrap(), b);
        // Only `tracker` is left: no temporary link behind.
        assert_eq!(fs::read_dir(&bin_dir.0).unwrap().count(), 1);
    }

    #[test]
    fn replaces_a_dangling_link() {
        let bin_dir = TempDir::new("dangling");
        std::os::unix::fs::symlink("/nonexistent/tracker", bin_dir.0.join("tracker")).unwrap();
        let a = Path::new("/build/a/tracker");
        assert_eq!(link(&bin_dir.0, a).unwrap(), Linked::Changed("/nonexistent/tracker".into()));
        assert_eq!(fs::read_link(bin_dir.0.join("tracker")).unwrap(), a);
    }

    #[test]
    fn leaves_a_real_install_alone() {
        let bin_dir = TempDir::new("real");
        let tracker = bin_dir.0.join("tracker");
        fs::write(&tracker, "installed").unwrap();
        assert_eq!(link(&bin_dir.0, Path::new("/build/a/tracker")).unwrap(), Linked::NotALink);
        assert_eq!(fs::read_to_string(&tracker).unwrap(), "installed");
    }

    #[test]
    fn a_missing_bin_dir_is_an_error() {
        let bin_dir = TempDir::new("missing");
        let missing = bin_dir.0.join("no-such-dir");
        assert!(link(&missing, Path::new("/build/a/tracker")).is_err());
    }
}
