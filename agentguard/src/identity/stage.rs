//! The identity stage of the pipeline: tags each event and, when the event
//! comes from a container whose metadata has just been asked for, holds it
//! (and everything behind it, to keep order) a bounded time so a
//! container's first exec already carries its name, image and labels.
//!
//! A container that stays unknown past the bound is let go with its id only,
//! and later events of it are not held again: the stage never delays the
//! stream more than `max_wait` per new container.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::resolver::Resolver;
use crate::event::Event;

/// Default bound on the wait for a new container's metadata: a Docker
/// inspect takes a few milliseconds here; this leaves room for a busy engine.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(250);

pub struct IdentityStage {
    resolver: Resolver,
    wanted_tx: UnboundedSender<String>,
    max_wait: Duration,
    pending: VecDeque<Event>,
    /// Container ids being waited for, with their deadline.
    held: HashMap<Arc<str>, Instant>,
    /// Ids whose wait expired: their events pass straight through.
    gave_up: HashSet<Arc<str>>,
    /// Events that waited, and waits that expired (for metrics).
    pub waited: u64,
    pub expired: u64,
}

impl IdentityStage {
    pub fn new(
        resolver: Resolver,
        wanted_tx: UnboundedSender<String>,
        max_wait: Duration,
    ) -> IdentityStage {
        IdentityStage {
            resolver,
            wanted_tx,
            max_wait,
            pending: VecDeque::new(),
            held: HashMap::new(),
            gave_up: HashSet::new(),
            waited: 0,
            expired: 0,
        }
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Tags `ev` and passes it (and any events now ready) to `out`.
    pub fn push(&mut self, mut ev: Event, now: Instant, out: &mut impl FnMut(Event)) {
        let id = self.resolver.tag(&ev);
        for w in self.resolver.take_wanted() {
            // A closed channel means no watcher: events keep their ids.
            let _ = self.wanted_tx.send(w);
        }
        let unknown = id
            .container
            .as_ref()
            .filter(|c| c.info.is_none())
            .map(|c| Arc::clone(&c.id));
        ev.identity = Some(id);
        if let Some(cid) = unknown {
            if !self.gave_up.contains(&cid) {
                self.held.entry(cid).or_insert(now + self.max_wait);
                self.waited += 1;
                self.pending.push_back(ev);
                self.drain(now, out);
                return;
            }
        }
        if self.pending.is_empty() {
            out(ev);
        } else {
            self.pending.push_back(ev);
            self.drain(now, out);
        }
    }

    /// Releases held events whose metadata arrived or whose wait expired.
    pub fn drain(&mut self, now: Instant, out: &mut impl FnMut(Event)) {
        while let Some(front) = self.pending.front_mut() {
            let Some(id) = front.identity.as_mut() else {
                self.release(out);
                continue;
            };
            if self.resolver.refresh(id) {
                if let Some(c) = &id.container {
                    self.held.remove(&c.id);
                }
                self.release(out);
                continue;
            }
            let cid = id.container.as_ref().map(|c| Arc::clone(&c.id));
            let deadline = cid.as_ref().and_then(|c| self.held.get(c)).copied();
            match (cid, deadline) {
                (Some(_), Some(d)) if now < d => break,
                (Some(cid), _) => {
                    self.held.remove(&cid);
                    if self.gave_up.len() >= 4096 {
                        self.gave_up.clear();
                    }
                    self.gave_up.insert(cid);
                    self.expired += 1;
                    self.release(out);
                }
                (None, _) => self.release(out),
            }
        }
    }

    fn release(&mut self, out: &mut impl FnMut(Event)) {
        if let Some(ev) = self.pending.pop_front() {
            out(ev);
        }
    }

    /// Whether events are held (the caller should call `drain` soon).
    pub fn is_holding(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Lets everything go (shutdown).
    pub fn flush(&mut self, out: &mut impl FnMut(Event)) {
        while let Some(ev) = self.pending.pop_front() {
            out(ev);
        }
    }
}
