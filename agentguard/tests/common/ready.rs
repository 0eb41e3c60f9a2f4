//! Starting a daemon and waiting until it is ready: the one helper the
//! tests (through `common::daemon::spawn_ready`) and the xtask benches and
//! soak (`Monitor::start`, which includes this file by path) share.
//! Standard library only, so both crates can build it.

use std::fmt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// What one look at a starting daemon found.
pub enum Look {
    Ready,
    NotYet,
    /// Give up (e.g. the user pressed Ctrl-C), saying why.
    Stop(String),
}

/// Why a daemon never got ready.
#[derive(Debug)]
pub enum NotReady {
    Exited(ExitStatus),
    Timeout(Duration),
    Stopped(String),
    Wait(std::io::Error),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Exited(st) => write!(f, "exited ({st}) before it was ready"),
            NotReady::Timeout(t) => write!(f, "not ready after {} s", t.as_secs()),
            NotReady::Stopped(why) => write!(f, "stopped waiting: {why}"),
            NotReady::Wait(e) => write!(f, "could not wait for it: {e}"),
        }
    }
}

/// `--ready-file READY` for `cmd`, with a file left from an earlier run
/// removed first (it would make the wait end at once).
pub fn ready_file_arg(cmd: &mut Command, ready: &Path) {
    let _ = std::fs::remove_file(ready);
    cmd.arg("--ready-file").arg(ready);
}

/// Polls `look` until it says ready; fails as soon as `child` exits, `look`
/// says stop, or `timeout` passes.
pub fn wait_ready(
    child: &mut Child,
    timeout: Duration,
    mut look: impl FnMut() -> Look,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    loop {
        match look() {
            Look::Ready => return Ok(()),
            Look::Stop(why) => return Err(NotReady::Stopped(why)),
            Look::NotYet => {}
        }
        match child.try_wait() {
            Ok(Some(st)) => return Err(NotReady::Exited(st)),
            Ok(None) => {}
            Err(e) => return Err(NotReady::Wait(e)),
        }
        if Instant::now() > deadline {
            return Err(NotReady::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
