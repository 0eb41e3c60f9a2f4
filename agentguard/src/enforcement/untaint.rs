//! `agentguard untaint`: gives tainted subjects their network back, by
//! removing their entries from the pinned `TAINTS` map the sock_addr hooks
//! read. Works with or without a running daemon (the daemon drops its own
//! record of a taint once the kernel entry is gone).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use agentguard_common::enforce::{Taint, TAINT_CGROUP};
use anyhow::{bail, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};

#[derive(Debug, clap::Args)]
pub struct UntaintArgs {
    /// The subject of this process: its container (when tainted as a
    /// whole), the process, its ancestors and its descendants. For a
    /// container: `--pid $(docker inspect -f '{{.State.Pid}}' NAME)`. Repeatable.
    #[arg(long)]
    pub pid: Vec<u32>,
    /// Every tainted subject.
    #[arg(long)]
    pub all: bool,
    /// Where the daemon pins its maps.
    #[arg(long, default_value = crate::sensor::PIN_DIR)]
    pub pin_dir: PathBuf,
}

pub fn run(args: &UntaintArgs) -> Result<()> {
    if args.pid.is_empty() && !args.all {
        bail!("say whose taint to clear: --pid PID (repeatable) or --all");
    }
    let path = args.pin_dir.join("TAINTS");
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is agentguard running, or did it run, on this host?)",
            path.display()
        )
    })?;
    let map = Map::from_map_data(data).context("reading the TAINTS map")?;
    let mut taints: BpfHashMap<MapData, u64, Taint> =
        BpfHashMap::try_from(map).context("the TAINTS map has an unexpected type")?;
    let present: HashSet<u64> = taints.keys().filter_map(|k| k.ok()).collect();
    let wanted: HashSet<u64> = if args.all {
        present.clone()
    } else {
        let mut w = HashSet::new();
        for pid in &args.pid {
            w.extend(subject_keys(*pid)?);
        }
        w
    };
    let mut cleared = 0;
    for k in wanted.intersection(&present) {
        if taints.remove(k).is_ok() {
            cleared += 1;
        }
    }
    eprintln!(
        "agentguard: cleared {cleared} taint entr{}",
        if cleared == 1 { "y" } else { "ies" }
    );
    Ok(())
}

/// The `TAINTS` keys that may hold `pid`'s taint: its container's cgroup,
/// itself, its ancestors and its descendants.
fn subject_keys(pid: u32) -> Result<Vec<u64>> {
    let proc = Path::new("/proc").join(pid.to_string());
    if !proc.exists() {
        bail!("no process {pid}");
    }
    let mut keys = vec![u64::from(pid)];
    if let Some(cg) = cgroup_id(pid) {
        keys.push(TAINT_CGROUP | cg);
    }
    let mut p = pid;
    for _ in 0..64 {
        match ppid(p) {
            Some(pp) if pp > 1 => {
                keys.push(u64::from(pp));
                p = pp;
            }
            _ => break,
        }
    }
    // Descendants: every process whose parent chain reaches `pid`.
    let mut tree: HashSet<u32> = HashSet::from([pid]);
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .context("listing /proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, ppid(p)?)))
        .collect();
    loop {
        let before = tree.len();
        for (p, pp) in &all {
            if tree.contains(pp) {
                tree.insert(*p);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    keys.extend(tree.into_iter().map(u64::from));
    Ok(keys)
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The cgroup v2 id (the cgroup directory's inode) of `pid`.
fn cgroup_id(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = crate::sensor::features::cgroup2_mount()?;
    let dir = root.join(rel.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_reads_past_a_comm_with_parentheses() {
        let me = std::process::id();
        let parent = ppid(me).expect("own ppid");
        assert_eq!(parent, std::os::unix::process::parent_id());
    }

    #[test]
    fn own_subject_has_self_ancestors_and_cgroup() {
        let me = std::process::id();
        let keys = subject_keys(me).expect("keys");
        assert!(keys.contains(&u64::from(me)));
        assert!(keys.contains(&u64::from(std::os::unix::process::parent_id())));
    }
}
