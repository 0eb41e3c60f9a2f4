//! Hot reload: re-load the directory, keep the last good set on failure.
//!
//! Change detection is a cheap poll rather than inotify: a SHA-256 over the
//! names and contents of the policy files (a few KiB). Content, not mtime,
//! so edits within one mtime tick and editors that restore mtimes are
//! still seen; polling, so files replaced by rename, ConfigMap symlink
//! swaps and network filesystems all work the same. The daemon calls
//! [`Reloader::poll`] every few seconds and [`Reloader::reload`] on SIGHUP.
//!
//! Every reload attempt comes with its audit record ([`ReloadDetail`]): the
//! content hashes before and after, the files and rules added and removed,
//! so a change of enforcement never goes unrecorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{policy_files, Diagnostic, LoadOptions, PolicySet};
use crate::event::ReloadDetail;

pub struct Reloader {
    dir: PathBuf,
    opts: LoadOptions,
    current: Arc<PolicySet>,
    /// Content of the set in force.
    in_force: Snapshot,
    /// Hash of the content last looked at (a refused change is reported once).
    seen: String,
}

/// One reload attempt: the outcome and its audit record.
pub struct Reload {
    pub result: Result<Arc<PolicySet>, Vec<Diagnostic>>,
    pub audit: ReloadDetail,
}

/// A last say on a set that loaded, before it is put in force.
pub type Check<'a> = dyn FnMut(&PolicySet) -> Result<(), Vec<Diagnostic>> + 'a;

/// The policy files' contents, hashed.
#[derive(Clone, Default)]
struct Snapshot {
    /// SHA-256 over every file's name and content, hex.
    hash: String,
    /// File name (relative to the directory) -> SHA-256 of its content.
    files: BTreeMap<String, String>,
}

fn hex(d: &[u8]) -> String {
    use std::fmt::Write as _;
    d.iter()
        .fold(String::with_capacity(d.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn snapshot(dir: &Path) -> Snapshot {
    use ring::digest::{Context, SHA256};
    let mut all = Context::new(&SHA256);
    let mut files = BTreeMap::new();
    match policy_files(dir) {
        Ok(list) => {
            for f in list {
                let name = f
                    .strip_prefix(dir)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .into_owned();
                // Unreadable: hashed as such (it will fail to load).
                let content = std::fs::read(&f).ok();
                let mut one = Context::new(&SHA256);
                match &content {
                    Some(c) => one.update(c),
                    None => one.update(b"\0unreadable"),
                }
                let h = hex(one.finish().as_ref());
                // Length-prefixed so no two listings hash alike.
                all.update(&(name.len() as u64).to_le_bytes());
                all.update(name.as_bytes());
                all.update(h.as_bytes());
                files.insert(name, h);
            }
        }
        Err(e) => all.update(format!("\0unlistable: {:?}", e.kind()).as_bytes()),
    }
    Snapshot {
        hash: hex(all.finish().as_ref()),
        files,
    }
}

/// `policy/rule` of every rule and Rego policy of `set`.
fn rule_names(set: &PolicySet) -> Vec<String> {
    let mut v: Vec<String> = set
        .rules()
        .iter()
        .map(|r| format!("{}/{}", r.policy(), r.name()))
        .chain(
            set.rego_policies()
                .iter()
                .map(|r| format!("rego/{}", r.name())),
        )
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Items of `b` not in `a` (both sorted).
fn missing_from(a: &[String], b: &[String]) -> Vec<String> {
    b.iter()
        .filter(|x| a.binary_search(x).is_err())
        .cloned()
        .collect()
}

impl Reloader {
    /// Loads `dir` for the first time.
    pub fn new(dir: &Path, opts: LoadOptions) -> Result<Reloader, Vec<Diagnostic>> {
        let snap = snapshot(dir);
        let set = PolicySet::load_dir_with(dir, &opts)?;
        Ok(Reloader {
            dir: dir.to_owned(),
            opts,
            current: Arc::new(set),
            seen: snap.hash.clone(),
            in_force: snap,
        })
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PolicySet> {
        Arc::clone(&self.current)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SHA-256 of the policy files of the set in force.
    pub fn hash(&self) -> &str {
        &self.in_force.hash
    }

    /// Loads the directory now (SIGHUP). On success the new set is in force;
    /// on failure the last good set stays in force and the diagnostics are
    /// returned. Either way with the audit record of the attempt.
    pub fn reload(&mut self) -> Reload {
        self.reload_checked(&mut |_| Ok(()))
    }

    /// [`Reloader::reload`], where `check` may still refuse a set that
    /// loaded (e.g. `strict:` and a rule this host cannot carry out).
    pub fn reload_checked(&mut self, check: &mut Check<'_>) -> Reload {
        let snap = snapshot(&self.dir);
        self.reload_from(snap, check)
    }

    /// A reload whose files were just hashed into `snap`.
    fn reload_from(&mut self, snap: Snapshot, check: &mut Check<'_>) -> Reload {
        self.seen = snap.hash.clone();
        let old = &self.in_force.files;
        let mut audit = ReloadDetail {
            dir: self.dir.display().to_string(),
            old_hash: self.in_force.hash.clone(),
            new_hash: snap.hash.clone(),
            applied: false,
            files_added: snap
                .files
                .keys()
                .filter(|f| !old.contains_key(*f))
                .cloned()
                .collect(),
            files_removed: old
                .keys()
                .filter(|f| !snap.files.contains_key(*f))
                .cloned()
                .collect(),
            files_changed: snap
                .files
                .iter()
                .filter(|(f, h)| old.get(*f).is_some_and(|o| o != *h))
                .map(|(f, _)| f.clone())
                .collect(),
            ..Default::default()
        };
        let loaded = PolicySet::load_dir_with(&self.dir, &self.opts)
            .and_then(|set| check(&set).map(|()| set));
        let result = match loaded {
            Ok(set) => {
                let (before, after) = (rule_names(&self.current), rule_names(&set));
                audit.rules_added = missing_from(&before, &after);
                audit.rules_removed = missing_from(&after, &before);
                audit.applied = true;
                self.current = Arc::new(set);
                self.in_force = snap;
                Ok(self.current())
            }
            Err(d) => {
                audit.error = Some(
                    d.iter()
                        .take(3)
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                Err(d)
            }
        };
        Reload { result, audit }
    }

    /// Reloads if the policy files changed since the last load (attempt):
    /// `None` when nothing changed. A broken change is reported once, not
    /// at every poll.
    pub fn poll(&mut self, check: &mut Check<'_>) -> Option<Reload> {
        let snap = snapshot(&self.dir);
        if snap.hash == self.seen {
            return None;
        }
        // The files were just read and hashed: not again for the audit.
        Some(self.reload_from(snap, check))
    }
}
