//! The identity stage of the pipeline: tags each event and, when the event
//! comes from a container whose metadata has just been asked for, holds it
//! (and the rest of that container's events, to keep their order) a bounded
//! time so a container's first exec already carries its name, image and
//! labels, which agent rules select on.
//!
//! Only the new container's events wait: the host's and every other
//! container's pass straight through, so the bound can leave room for an
//! engine slowed by a busy host (an agent's labels arriving late would let
//! its first actions escape the agent rules). A container that stays unknown
//! past the bound is let go with its id only, and later events of it are not
//! held again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::resolver::Resolver;
use crate::event::Event;

/// Default bound on the wait for a new container's metadata: a Docker
/// inspect takes a few milliseconds here, but well over 250 ms while agents
/// flood the host's two CPUs (measured in the flood test).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);

/// Events held in all (memory bound): past it, the container waiting
/// longest is let go early.
const MAX_HELD_EVENTS: usize = 65_536;

struct Held {
    deadline: Instant,
    events: VecDeque<Event>,
}

pub struct IdentityStage {
    resolver: Resolver,
    wanted_tx: UnboundedSender<String>,
    max_wait: Duration,
    /// Containers being waited for, with their events in arrival order.
    held: HashMap<Arc<str>, Held>,
    held_events: usize,
    /// Ids whose wait expired: their events pass straight through.
    gave_up: HashSet<Arc<str>>,
    /// Events that waited, and waits that expired (for metrics).
    pub waited: u64,
    pub expired: u64,
    /// When `push` last looked at the held containers: at most once a
    /// millisecond, not at every event of a busy host.
    last_drain: Option<Instant>,
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
            held: HashMap::new(),
            held_events: 0,
            gave_up: HashSet::new(),
            waited: 0,
            expired: 0,
            last_drain: None,
        }
    }

    fn maybe_drain(&mut self, now: Instant, out: &mut impl FnMut(Event)) {
        if self.held.is_empty() {
            return;
        }
        if self
            .last_drain
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(1))
        {
            return;
        }
        self.drain(now, out);
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Housekeeping: the resolver forgets what is gone (see
    /// [`Resolver::prune`]), and containers given up on that are gone
    /// from the runtime's list are forgotten. Returns the processes pruned.
    pub fn prune(&mut self, alive: impl Fn(u32) -> bool, live: impl Fn(&str) -> bool) -> usize {
        self.gave_up.retain(|id| live(id));
        self.resolver.prune(alive)
    }

    /// Tags `ev` and passes it (and any events now ready) to `out`.
    pub fn push(&mut self, mut ev: Event, now: Instant, out: &mut impl FnMut(Event)) {
        let id = self.resolver.tag(&ev);
        for w in self.resolver.take_wanted() {
            // A closed channel means no watcher: events keep their ids.
            let _ = self.wanted_tx.send(w);
        }
        let container = id
            .container
            .as_ref()
            .map(|c| (Arc::clone(&c.id), c.info.is_none()));
        ev.identity = Some(id);
        if let Some((cid, unknown)) = container {
            // Behind its container's held events, even once known, so the
            // container's events stay in order.
            if let Some(h) = self.held.get_mut(&cid) {
                h.events.push_back(ev);
                self.held_events += 1;
                self.waited += 1;
                self.maybe_drain(now, out);
                return;
            }
            if unknown && !self.gave_up.contains(&cid) {
                let mut events = VecDeque::new();
                events.push_back(ev);
                self.held.insert(
                    cid,
                    Held {
                        deadline: now + self.max_wait,
                        events,
                    },
                );
                self.held_events += 1;
                self.waited += 1;
                self.maybe_drain(now, out);
                return;
            }
        }
        out(ev);
        self.maybe_drain(now, out);
    }

    /// Releases the held containers whose metadata arrived or whose wait
    /// expired.
    pub fn drain(&mut self, now: Instant, out: &mut impl FnMut(Event)) {
        self.last_drain = Some(now);
        if self.held.is_empty() {
            return;
        }
        let mut ready: Vec<(Arc<str>, bool)> = Vec::new();
        for (cid, h) in self.held.iter_mut() {
            let known = h
                .events
                .front_mut()
                .and_then(|e| e.identity.as_mut())
                .is_none_or(|id| self.resolver.refresh(id));
            if known {
                ready.push((Arc::clone(cid), true));
            } else if now >= h.deadline {
                ready.push((Arc::clone(cid), false));
            }
        }
        if self.held_events > MAX_HELD_EVENTS && ready.is_empty() {
            if let Some(cid) = self
                .held
                .iter()
                .min_by_key(|(_, h)| h.deadline)
                .map(|(c, _)| Arc::clone(c))
            {
                ready.push((cid, false));
            }
        }
        for (cid, known) in ready {
            if !known {
                if self.gave_up.len() >= 4096 {
                    self.gave_up.clear();
                }
                self.gave_up.insert(Arc::clone(&cid));
                self.expired += 1;
            }
            self.release(&cid, out);
        }
    }

    fn release(&mut self, cid: &Arc<str>, out: &mut impl FnMut(Event)) {
        let Some(h) = self.held.remove(cid) else {
            return;
        };
        self.held_events = self.held_events.saturating_sub(h.events.len());
        for mut ev in h.events {
            if let Some(id) = ev.identity.as_mut() {
                self.resolver.refresh(id);
            }
            out(ev);
        }
    }

    /// Whether events are held (the caller should call `drain` soon).
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Lets everything go (shutdown), longest waiting first.
    pub fn flush(&mut self, out: &mut impl FnMut(Event)) {
        let mut cids: Vec<(Instant, Arc<str>)> = self
            .held
            .iter()
            .map(|(c, h)| (h.deadline, Arc::clone(c)))
            .collect();
        cids.sort();
        for (_, cid) in cids {
            self.release(&cid, out);
        }
    }
}
