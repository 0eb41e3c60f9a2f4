//! Process facts from /proc, for processes the sensor saw before they were
//! tracked (started before the daemon) and for ancestry chains.

use std::path::PathBuf;

/// What /proc says about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// /proc/PID/exe target; None for kernel threads or when unreadable.
    pub exe: Option<PathBuf>,
    pub argv: Vec<String>,
}

/// Parses /proc/PID/stat: "pid (comm) state ppid ...". comm may contain
/// spaces and parentheses, so split at the last ')'.
pub fn parse_stat(stat: &str) -> Option<(u32, String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat.get(..open)?.trim().parse().ok()?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((pid, comm, ppid))
}

/// Field 22 of /proc/PID/stat (`starttime`, clock ticks after boot).
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let close = stat.rfind(')')?;
    // After the comm: state is field 3, so starttime is the 20th.
    stat.get(close + 1..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// When process `pid` started, CLOCK_BOOTTIME ns (tick precision); None
/// when it is gone.
pub fn start_boottime_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_start_ticks(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(ticks.saturating_mul(1_000_000_000 / hz))
}

/// Reads one process; None when it is gone or unreadable.
pub fn read(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, comm, ppid) = parse_stat(&stat)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        ppid,
        comm,
        exe,
        argv,
    })
}

/// The chain from `pid` up to init (pid 1 excluded), nearest first,
/// at most `max` long.
pub fn ancestry(pid: u32, max: usize) -> Vec<ProcInfo> {
    let mut out = Vec::new();
    let mut cur = pid;
    while cur > 1 && out.len() < max {
        let Some(p) = read(cur) else { break };
        cur = p.ppid;
        out.push(p);
    }
    out
}

/// Every process /proc lists now (pids that vanish mid-scan are skipped).
pub fn all() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_after_an_odd_comm() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks("42 (x) S 1"), None);
        // Our own process started after boot and before now.
        let own = start_boottime_ns(std::process::id()).expect("own start");
        assert!(own > 0 && own <= crate::event::boot_ns(), "{own}");
    }

    #[test]
    fn stat_with_odd_comm() {
        let s = "4242 (my (weird) prog) S 17 4242 4242 0 -1 4194560 100 0 0 0";
        assert_eq!(
            parse_stat(s),
            Some((4242, "my (weird) prog".to_owned(), 17))
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x)"), None);
    }

    #[test]
    fn own_ancestry_is_readable() {
        let me = std::process::id();
        let chain = ancestry(me, 16);
        assert_eq!(chain.first().map(|p| p.pid), Some(me));
        let exe = std::env::current_exe().expect("current_exe");
        assert_eq!(chain[0].exe.as_deref(), Some(exe.as_path()));
        // Each link's ppid is the next link's pid.
        for w in chain.windows(2) {
            assert_eq!(w[0].ppid, w[1].pid);
        }
    }
}
