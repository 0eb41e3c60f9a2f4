//! Which cgroups the daemon has classified, for the kernel's stream filter
//! (`CGROUP_MASK`). A task with no filter entry of its own streams its
//! cgroup's mask; a cgroup not classified yet streams what the rules need,
//! so a new container is watched as an agent's until the daemon knows whose
//! it is. The daemon classifies a cgroup from the first event it tags there,
//! rewrites every entry when the masks change (a reload), and removes the
//! entries of cgroups that are gone. A container's cgroup is classified only
//! from an event that carries the container's metadata (never as "not an
//! agent's" from an event the daemon tagged too late to know); the host's
//! cgroups are classified by walking the cgroup tree.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use agentguard_common::filter::CGROUP_PATH_LEN;

/// How a cgroup was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupClass {
    /// An agent's container: its tasks stream what the rules need.
    Agent,
    /// Anything else: the default mask.
    Other,
}

/// The daemon's copy of the kernel map (the kernel never writes it).
#[derive(Default)]
pub struct CgroupClasses {
    classes: HashMap<u64, CgroupClass>,
    /// Inserts the kernel refused (the map was full).
    pub refused: u64,
}

impl CgroupClasses {
    /// Whether `cg` needs (re)writing as `class`.
    pub fn needs(&self, cg: u64, class: CgroupClass) -> bool {
        self.classes.get(&cg) != Some(&class)
    }

    pub fn record(&mut self, cg: u64, class: CgroupClass) {
        self.classes.insert(cg, class);
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, CgroupClass)> + '_ {
        self.classes.iter().map(|(c, k)| (*c, *k))
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Forgets the cgroups not in `live`; returns them (for the kernel map).
    pub fn sweep(&mut self, live: &HashSet<u64>) -> Vec<u64> {
        let gone: Vec<u64> = self
            .classes
            .keys()
            .filter(|c| !live.contains(c))
            .copied()
            .collect();
        for c in &gone {
            self.classes.remove(c);
        }
        gone
    }
}

/// [`walk_cgroups`] of the host's cgroup2 mount (None without one, or when
/// the walk was cut short).
pub fn walk_host() -> Option<Vec<(u64, String)>> {
    walk_cgroups(&crate::sensor::features::cgroup2_mount()?)
}

/// The cgroups that exist now, as (id, path below the cgroup2 mount): on
/// cgroup2 a cgroup's id is its directory's inode number. Bounded walk
/// (depth and count) so a hostile tree of delegated cgroups cannot stall
/// the daemon; None when the walk was cut short (then nothing should be
/// forgotten).
pub fn walk_cgroups(root: &Path) -> Option<Vec<(u64, String)>> {
    use std::os::unix::fs::MetadataExt;
    const MAX: usize = 200_000;
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            // Removed while walking: it is gone, not a reason to stop.
            continue;
        };
        let rel = dir
            .strip_prefix(root)
            .map(|r| format!("/{}", r.display()))
            .unwrap_or_default();
        out.push((meta.ino(), rel));
        if out.len() > MAX || depth > 32 {
            return None;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    Some(out)
}

/// The kernel's record of each cgroup's path (`CGROUP_PATHS`, written at
/// cgroup mkdir; pre-filled from the tree for the cgroups older than the
/// daemon), read by the identity stage.
pub struct CgroupPaths {
    map: aya::maps::HashMap<aya::maps::MapData, u64, [u8; CGROUP_PATH_LEN]>,
}

impl CgroupPaths {
    pub(super) fn new(
        map: aya::maps::HashMap<aya::maps::MapData, u64, [u8; CGROUP_PATH_LEN]>,
    ) -> CgroupPaths {
        CgroupPaths { map }
    }

    /// The path of cgroup `cg` below the cgroup2 mount, if recorded.
    pub fn get(&self, cg: u64) -> Option<String> {
        let v = self.map.get(&cg, 0).ok()?;
        let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
        std::str::from_utf8(&v[..end]).ok().map(str::to_owned)
    }

    /// Records the cgroups that exist now (they were made before the probe).
    pub fn prefill(&mut self, cgroups: &[(u64, String)]) {
        for (cg, path) in cgroups {
            let b = path.as_bytes();
            // Longer than the kernel's record: left to /proc.
            if b.len() >= CGROUP_PATH_LEN || self.map.get(cg, 0).is_ok() {
                continue;
            }
            let mut v = [0u8; CGROUP_PATH_LEN];
            v[..b.len()].copy_from_slice(b);
            let _ = self.map.insert(cg, v, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_rewritten_only_on_change_and_swept_when_gone() {
        let mut c = CgroupClasses::default();
        assert!(c.needs(7, CgroupClass::Other));
        c.record(7, CgroupClass::Other);
        assert!(!c.needs(7, CgroupClass::Other));
        // Labels that came late turn it into an agent's.
        assert!(c.needs(7, CgroupClass::Agent));
        c.record(7, CgroupClass::Agent);
        c.record(8, CgroupClass::Other);
        let gone = c.sweep(&HashSet::from([8]));
        assert_eq!(gone, vec![7]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_walk_finds_this_process_cgroup() {
        let Some(root) = crate::sensor::features::cgroup2_mount() else {
            return;
        };
        let live = walk_cgroups(&root).expect("walk");
        // The root cgroup's id is 1 on cgroup2.
        assert!(live.contains(&(1, "/".to_owned())), "{root:?}: {live:?}");
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup2 line");
        assert!(live.iter().any(|(_, p)| p == own), "{own} not in {live:?}");
    }
}
