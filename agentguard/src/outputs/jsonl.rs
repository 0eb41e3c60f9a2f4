//! JSON lines to a writer (stdout or a file), off the event path.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;

/// Counters shared with the writer thread.
#[derive(Default, Debug)]
pub struct SinkStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
}

/// A bounded-queue JSON-lines sink.
pub struct JsonLines<T: Serialize + Send + 'static> {
    tx: Option<SyncSender<T>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SinkStats>,
}

impl<T: Serialize + Send + 'static> JsonLines<T> {
    /// Starts the writer thread; `capacity` records may wait in the queue.
    pub fn spawn<W: Write + Send + 'static>(out: W, capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<T>(capacity);
        let stats = Arc::new(SinkStats::default());
        let st = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("agentguard-jsonl".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
                let mut line = Vec::with_capacity(1024);
                loop {
                    // Block for the first record, then take whatever else is
                    // queued before flushing: one write per burst.
                    let Ok(first) = rx.recv() else { break };
                    let mut next = Some(first);
                    while let Some(rec) = next.take() {
                        line.clear();
                        if serde_json::to_writer(&mut line, &rec).is_ok() {
                            line.push(b'\n');
                            if out.write_all(&line).is_err() {
                                st.write_errors.fetch_add(1, Ordering::Relaxed);
                            } else {
                                st.written.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    if out.flush().is_err() {
                        st.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = out.flush();
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    /// Queues a record; never blocks. Returns false when it was dropped.
    pub fn send(&self, rec: T) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(rec) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Flushes everything queued and stops the thread.
    pub fn close(mut self) -> Arc<SinkStats> {
        self.shutdown();
        Arc::clone(&self.stats)
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T: Serialize + Send + 'static> Drop for JsonLines<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer that blocks until released: stands for a stalled consumer.
    struct Stalled(Arc<(Mutex<bool>, std::sync::Condvar)>);
    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (m, cv) = &*self.0;
            let mut open = m.lock().map_err(|_| std::io::Error::other("poisoned"))?;
            while !*open {
                open = cv
                    .wait(open)
                    .map_err(|_| std::io::Error::other("poisoned"))?;
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.write(&[]).map(|_| ())
        }
    }

    #[test]
    fn writes_one_line_per_record() {
        let buf = Shared::default();
        let sink = JsonLines::spawn(buf.clone(), 16).expect("spawn");
        for i in 0..10u32 {
            assert!(sink.send(serde_json::json!({ "n": i })));
        }
        let stats = sink.close();
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[3], r#"{"n":3}"#);
        assert_eq!(stats.written.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn full_queue_drops_instead_of_blocking() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let sink = JsonLines::spawn(Stalled(Arc::clone(&gate)), 4).expect("spawn");
        // The writer takes one record and stalls; 4 fit in the queue; the
        // rest must be refused at once.
        let sent = (0..100u32).filter(|i| sink.send(*i)).count();
        assert!(sent <= 6, "sent {sent}");
        assert!(sink.stats().dropped.load(Ordering::Relaxed) >= 94);
        {
            let (m, cv) = &*gate;
            *m.lock().expect("lock") = true;
            cv.notify_all();
        }
        let stats = sink.close();
        assert_eq!(stats.written.load(Ordering::Relaxed) as usize, sent);
    }
}
