//! Hot reload: re-load the directory, keep the last good set on failure.
//!
//! Change detection is a cheap poll rather than inotify: a hash over the
//! names and contents of the policy files (a few KiB). Content, not mtime,
//! so edits within one mtime tick and editors that restore mtimes are
//! still seen; polling, so files replaced by rename, ConfigMap symlink
//! swaps and network filesystems all work the same. The daemon calls
//! [`Reloader::poll`] every few seconds and [`Reloader::reload`] on SIGHUP.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{policy_files, Diagnostic, LoadOptions, PolicySet};

pub struct Reloader {
    dir: PathBuf,
    opts: LoadOptions,
    current: Arc<PolicySet>,
    fingerprint: u64,
}

/// Hash of the policy files' names and contents (unreadable: hashed as such).
fn fingerprint(dir: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    match policy_files(dir) {
        Ok(files) => {
            for f in files {
                f.hash(&mut h);
                std::fs::read(&f).ok().hash(&mut h);
            }
        }
        Err(e) => e.kind().hash(&mut h),
    }
    h.finish()
}

impl Reloader {
    /// Loads `dir` for the first time.
    pub fn new(dir: &Path, opts: LoadOptions) -> Result<Reloader, Vec<Diagnostic>> {
        let fingerprint = fingerprint(dir);
        let set = PolicySet::load_dir_with(dir, &opts)?;
        Ok(Reloader {
            dir: dir.to_owned(),
            opts,
            current: Arc::new(set),
            fingerprint,
        })
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PolicySet> {
        Arc::clone(&self.current)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the directory now (SIGHUP). On success the new set is in force
    /// and returned; on failure the last good set stays in force and the
    /// diagnostics are returned.
    pub fn reload(&mut self) -> Result<Arc<PolicySet>, Vec<Diagnostic>> {
        self.fingerprint = fingerprint(&self.dir);
        let set = PolicySet::load_dir_with(&self.dir, &self.opts)?;
        self.current = Arc::new(set);
        Ok(self.current())
    }

    /// Reloads if the policy files changed since the last load (attempt):
    /// `None` when nothing changed. A broken change is reported once, not
    /// at every poll.
    pub fn poll(&mut self) -> Option<Result<Arc<PolicySet>, Vec<Diagnostic>>> {
        if fingerprint(&self.dir) == self.fingerprint {
            return None;
        }
        Some(self.reload())
    }
}
