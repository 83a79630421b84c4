//! Running external commands for the lab and xtask: every command's exit status is checked and a
//! failure carries the command line and its stderr, and child processes are owned by a
//! [`ChildGuard`] that stops and reaps them when dropped (PID 1 on the test VMs reaps nothing,
//! so an un-waited child stays a zombie for the life of the machine).

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::io::Write;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a stopped child gets to exit on SIGTERM before it is SIGKILLed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The command line as a shell would show it, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion with captured output and returns its stdout; a non-zero exit is an
/// error naming the command and quoting its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let output = output(cmd.stdin(Stdio::null()))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`], with `input` written to the command's stdin.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<String> {
    let line = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    // The pipe is closed when `stdin` goes out of scope, so the command sees EOF.
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).with_context(|| format!("cannot write to `{line}`"))?;
    }
    let output = child.wait_with_output().with_context(|| format!("cannot wait for `{line}`"))?;
    check(&line, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` with its output going to our own stdout/stderr (for long, chatty steps such as apt
/// or cargo, whose progress the user should see); fails on a non-zero exit.
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    let status = cmd.status().with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status}); its output is above");
    }
    Ok(())
}

/// Runs `cmd` and tells whether it exited 0, for probes where failure is an answer (for
/// example "does this interface exist yet"). Failing to start it at all is still an error.
pub fn succeeds(cmd: &mut Command) -> Result<bool> {
    let line = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    Ok(status.success())
}

/// Whether `program` can be found in `PATH` (or is an existing path).
pub fn have_program(program: impl AsRef<OsStr>) -> bool {
    let program = std::path::Path::new(program.as_ref());
    if program.components().count() > 1 {
        return program.exists();
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let output = cmd.output().with_context(|| format!("cannot start `{line}`"))?;
    check(&line, &output)?;
    Ok(output)
}

fn check(line: &str, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Some tools (ping, ethtool) explain failures on stdout, so quote it when stderr is empty.
    let said = if stderr.trim().is_empty() { stdout.trim() } else { stderr.trim() };
    bail!("`{line}` failed ({}): {said}", output.status)
}

/// Polls `ready` every `interval` until it returns true, for at most `timeout` (and at most
/// `timeout / interval + 1` attempts, so a slow probe cannot stretch the wait unboundedly).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let attempts = timeout.as_millis() / interval.as_millis().max(1) + 1;
    for _ in 0..attempts {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        sleep(interval);
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// A child process that is stopped (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and reaped when
/// the guard is dropped, including during a panic's unwinding.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Starts `cmd`; the guard is named after its command line for messages.
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let name = describe(&cmd);
        let child = cmd.spawn().with_context(|| format!("cannot start `{name}`"))?;
        Ok(Self { child: Some(child), name })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The command line it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying child, e.g. to take its stdout pipe.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("ChildGuard holds its child until dropped")
    }

    /// Whether it is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child_mut().try_wait(), Ok(None))
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        let name = self.name.clone();
        self.child_mut().try_wait().with_context(|| format!("cannot poll `{name}`"))
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) unless it has already exited.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        send_signal(self.pid(), signal).with_context(|| format!("cannot signal `{}`", self.name))
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let mut status = None;
        let what = format!("`{}` to exit", self.name);
        let waited = wait_until(&what, timeout, Duration::from_millis(20), || {
            status = self.try_status()?;
            Ok(status.is_some())
        });
        match waited {
            Ok(()) => Ok(status),
            Err(_) => Ok(None),
        }
    }

    /// Stops it (SIGTERM, SIGKILL after [`STOP_GRACE`]) and returns how it exited.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        if let Some(status) = self.wait_timeout(STOP_GRACE)? {
            return Ok(status);
        }
        let name = self.name.clone();
        let child = self.child_mut();
        child.kill().with_context(|| format!("cannot kill `{name}`"))?;
        child.wait().with_context(|| format!("cannot reap `{name}`"))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if let Err(err) = self.terminate() {
            eprintln!("warning: stopping `{}`: {err:#}", self.name);
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: i32) -> Result<()> {
    // pid 0 or a negative pid would signal a whole process group, never what is meant here.
    let pid = i32::try_from(pid).ok().filter(|&p| p > 0).with_context(|| format!("bad pid {pid}"))?;
    // SAFETY: kill(2) has no memory-safety preconditions; a positive pid names one process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("kill({pid}, {signal})"));
    }
    Ok(())
}
