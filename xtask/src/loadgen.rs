//! `xtask loadgen`: the workload `bench overhead` times, and the producers
//! of `bench throughput`. Raw libc calls so each iteration is exactly the
//! syscalls being measured.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// Untimed iterations first, so caches (dentries, socket slabs) are warm.
pub const WARMUP: u64 = 100;

/// What loadgen prints on stdout, one JSON object.
#[derive(Debug, Serialize, Deserialize)]
pub struct Timings {
    pub opens: u64,
    pub connects: u64,
    /// Elapsed time of the open loop (openat + close per iteration).
    pub open_ns: u64,
    /// Elapsed time of the connect loop (socket + refused connect + close).
    pub connect_ns: u64,
}

/// `dir` (default: a fresh one in the temp dir) holds the file opened; the
/// bench passes its own work dir so leftovers of a killed run go with it.
/// `settle` is slept first, untimed: in a new container, it gives the
/// monitor time to learn about the container before the loops start.
pub fn run(opens: u64, connects: u64, dir: Option<PathBuf>, settle: Duration) -> Result<()> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("xtask-loadgen-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("target.txt");
    let result = std::fs::write(&file, b"agentguard overhead bench\n")
        .with_context(|| format!("writing {}", file.display()))
        .and_then(|()| {
            std::thread::sleep(settle);
            open_loop(&file, WARMUP)?;
            let open_ns = open_loop(&file, opens)?;
            // No connects asked (the throughput producers): no connect
            // syscalls at all, warm-up included.
            let connect_ns = if connects == 0 {
                0
            } else {
                let port = closed_port()?;
                connect_loop(port, WARMUP)?;
                connect_loop(port, connects)?
            };
            Ok(Timings {
                opens,
                connects,
                open_ns,
                connect_ns,
            })
        });
    // Best effort: leftovers in a temp dir are harmless. Only our file, and
    // the directory only if that left it empty.
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir(&dir);
    println!("{}", serde_json::to_string(&result?)?);
    Ok(())
}

/// `n` × openat(O_RDONLY) + close of `file`; elapsed nanoseconds.
fn open_loop(file: &Path, n: u64) -> Result<u64> {
    let path = CString::new(file.as_os_str().as_bytes()).context("temp path contains NUL")?;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: path is a valid NUL-terminated string; the fd is closed below.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            bail!("openat {}: {err}", file.display());
        }
        // SAFETY: fd was just opened by us and is not used afterwards.
        unsafe { libc::close(fd) };
    }
    Ok(elapsed_ns(start))
}

/// A loopback port nothing listens on: bind one, then let it go.
fn closed_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `n` × socket + blocking connect to 127.0.0.1:`port` (refused at once) +
/// close; elapsed nanoseconds.
fn connect_loop(port: u16, n: u64) -> Result<u64> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let addr_len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            bail!("socket: {err}");
        }
        // SAFETY: addr is a valid sockaddr_in and addr_len its size.
        let rc = unsafe {
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_in).cast::<libc::sockaddr>(),
                addr_len,
            )
        };
        let err = io::Error::last_os_error();
        // SAFETY: fd was just opened by us and is not used afterwards.
        unsafe { libc::close(fd) };
        if rc == 0 {
            bail!("connect to 127.0.0.1:{port} succeeded: something listens there now");
        }
        if err.raw_os_error() != Some(libc::ECONNREFUSED) {
            bail!("connect to 127.0.0.1:{port}: {err} (expected ECONNREFUSED)");
        }
    }
    Ok(elapsed_ns(start))
}

fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_run() -> Result<()> {
        let file = std::env::temp_dir().join(format!("xtask-loadgen-test-{}", std::process::id()));
        std::fs::write(&file, b"x")?;
        let r = open_loop(&file, 10);
        let _ = std::fs::remove_file(&file);
        r?;
        connect_loop(closed_port()?, 10)?;
        Ok(())
    }
}
