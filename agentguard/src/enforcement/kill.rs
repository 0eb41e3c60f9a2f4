//! Userspace kills: through a pidfd, so a pid recycled since the event is
//! never hit.

use std::io;

/// What a kill attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum KillResult {
    Killed,
    /// The process was gone (or its pid now names a younger process).
    Gone,
}

/// Boot-time start of `pid`, in ns (from /proc/PID/stat, clock ticks).
fn start_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the comm's closing paren; starttime is field 22 overall.
    let rest = stat.rsplit_once(')')?.1;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(ticks.saturating_mul(1_000_000_000) / hz)
}

/// SIGKILLs `pid` if it is still the process that acted at boot-time
/// `event_ns`. The pidfd is opened first and the start time checked after,
/// so the check and the signal address the same process.
pub fn kill_pid(pid: u32, event_ns: u64) -> io::Result<KillResult> {
    // SAFETY: pidfd_open takes a pid and flags, no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(KillResult::Gone),
            _ => Err(e),
        };
    }
    let fd = fd as libc::c_int;
    // Start time has clock-tick (10 ms) resolution, truncated: a process
    // that started after the event can only look older, never younger, so
    // this refuses recycled pids except within the same tick.
    let same = start_ns(pid).is_some_and(|s| s <= event_ns);
    let res = if same {
        // SAFETY: fd is our open pidfd; null siginfo is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            Ok(KillResult::Killed)
        } else {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(KillResult::Gone),
                _ => Err(e),
            }
        }
    } else {
        Ok(KillResult::Gone)
    };
    // SAFETY: closing our own fd once.
    unsafe { libc::close(fd) };
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::boot_ns;
    use std::process::Command;

    #[test]
    fn kills_a_live_child_and_spares_a_younger_one() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("spawn");
        // An event from before the child existed: its pid must not be hit.
        let before = boot_ns().saturating_sub(5_000_000_000);
        assert_eq!(
            kill_pid(child.id(), before).expect("kill"),
            KillResult::Gone
        );
        assert!(child.try_wait().expect("wait").is_none(), "spared");
        let now = boot_ns();
        assert_eq!(kill_pid(child.id(), now).expect("kill"), KillResult::Killed);
        let st = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        assert_eq!(kill_pid(child.id(), now).expect("gone"), KillResult::Gone);
    }
}
