//! The bounded queue every alert sink puts between the event path and its
//! I/O: `send` never blocks (a full queue drops the record and counts it),
//! one named thread drains it, and shutdown lets that thread finish what is
//! queued before it is joined.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::SinkStats;

pub struct Queue<T> {
    tx: Option<SyncSender<T>>,
    /// Raised at shutdown so a draining thread stops retrying and waiting.
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SinkStats>,
}

impl<T: Send + 'static> Queue<T> {
    /// Starts thread `name` running `drain` on the receiving end; at most
    /// `capacity` records wait. `drain` also gets the sink's counters and
    /// the closing flag.
    pub fn spawn(
        name: &str,
        capacity: usize,
        drain: impl FnOnce(Receiver<T>, Arc<SinkStats>, Arc<AtomicBool>) + Send + 'static,
    ) -> io::Result<Self> {
        let (tx, rx) = sync_channel(capacity);
        let stats = Arc::new(SinkStats::default());
        let closing = Arc::new(AtomicBool::new(false));
        let (st, cl) = (Arc::clone(&stats), Arc::clone(&closing));
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || drain(rx, st, cl))?;
        Ok(Queue {
            tx: Some(tx),
            closing,
            thread: Some(thread),
            stats,
        })
    }

    /// Queues a record; never blocks. Returns false when it was dropped.
    pub fn send(&self, item: T) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl<T> Queue<T> {
    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// Raises the closing flag, closes the queue and waits for the thread
    /// to drain what was queued. Idempotent.
    pub fn shutdown(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sleeps up to `d` in short slices, waking early once `closing` is set.
pub fn nap(d: Duration, closing: &AtomicBool) {
    let end = Instant::now() + d;
    while !closing.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
