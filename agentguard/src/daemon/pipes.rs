//! Who writes into which pipe, for `stdin_from` rules (`curl | sh`).

use std::time::{Duration, Instant};

use crate::event::Event;

/// The programs execs started with a pipe as stdout, by the pipe's inode
/// (the most recent [`PipeWriters::MAX`]): an exec whose stdin is one of
/// them gets `exec.stdin_from`, what a `stdin_from` rule matches. The
/// kernel pairs both orders itself; this is for the order it reports.
#[derive(Default)]
pub(super) struct PipeWriters {
    by_pipe: std::collections::HashMap<u64, String>,
    order: std::collections::VecDeque<(u64, Instant)>,
}

impl PipeWriters {
    const MAX: usize = 1024;
    /// A pipeline's programs start together (`curl | sh`): a writer older
    /// than this is not what a new reader's pipe came from in practice,
    /// and keeping it would let the table fill with every pipe ever made.
    const TTL: Duration = Duration::from_secs(60);

    pub(super) fn note(&mut self, ev: &mut Event) {
        let crate::event::Detail::Exec(x) = &mut ev.detail else {
            return;
        };
        // Only what ran: a shell's PATH search fails its way to the one
        // exec that works.
        if ev.ret != 0 {
            return;
        }
        if let Some(p) = x.stdin_pipe {
            if let Some(w) = self.by_pipe.get(&p) {
                x.stdin_from = Some(w.clone());
            }
        }
        if let Some(p) = x.stdout_pipe {
            let now = Instant::now();
            while let Some(&(old, at)) = self.order.front() {
                if self.order.len() < Self::MAX && now.duration_since(at) < Self::TTL {
                    break;
                }
                self.order.pop_front();
                self.by_pipe.remove(&old);
            }
            let exe = x.binary.clone().unwrap_or_else(|| x.file.path.clone());
            if self.by_pipe.insert(p, exe).is_none() {
                self.order.push_back((p, now));
            }
        }
    }
}
