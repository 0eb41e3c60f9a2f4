//! JSON lines to a writer (stdout or a file, optionally rotated by size),
//! off the event path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Counters shared with a sink's thread; `dropped` is what metrics export as
/// `agentguard_alert_sink_drops_total`.
#[derive(Default, Debug)]
pub struct SinkStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
}

impl SinkStats {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
}

/// Where finished lines go. Lines arrive whole, so a rotating file can cut
/// between them, never inside one.
pub trait LineOut: Send + 'static {
    /// `line` ends with '\n'.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// Any `Write`, buffered.
pub struct Plain<W: Write>(BufWriter<W>);

impl<W: Write + Send + 'static> Plain<W> {
    pub fn new(w: W) -> Self {
        Plain(BufWriter::with_capacity(1 << 16, w))
    }
}

impl<W: Write + Send + 'static> LineOut for Plain<W> {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.0.write_all(line)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A file that is renamed to `NAME.1` (older ones shift to `.2` .. `.keep`,
/// the oldest is deleted) before a line would take it past `max_bytes`.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    size: u64,
    out: Option<BufWriter<File>>,
}

impl RotatingFile {
    /// Opens (appends to) `path`. `max_bytes == 0` never rotates; `keep == 0`
    /// truncates in place instead of keeping old files.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let mut f = RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            size: 0,
            out: None,
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.out = Some(BufWriter::with_capacity(1 << 16, file));
        Ok(())
    }

    /// `alerts.jsonl` -> `alerts.jsonl.N`.
    pub fn rotated_name(path: &Path, n: u32) -> PathBuf {
        let mut s = path.as_os_str().to_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        if self.keep == 0 {
            File::create(&self.path)?;
        } else {
            // Oldest first so nothing is overwritten before it has moved.
            let _ = std::fs::remove_file(Self::rotated_name(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let from = Self::rotated_name(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, Self::rotated_name(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, Self::rotated_name(&self.path, 1))?;
        }
        self.reopen()
    }
}

impl LineOut for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        if self.out.is_none() {
            // A failed rotation left no file open; try again for this line.
            self.reopen()?;
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("no open file"))?;
        out.write_all(line)?;
        self.size += len;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// How a queued record becomes a line (without its '\n').
pub trait Encode: Send + 'static {
    fn encode(&self, buf: &mut Vec<u8>) -> bool;
}

/// Bytes already serialized once and shared between sinks.
impl Encode for Arc<[u8]> {
    fn encode(&self, buf: &mut Vec<u8>) -> bool {
        buf.extend_from_slice(self);
        true
    }
}

/// An event, encoded on the writer thread with its identity from a
/// per-thread cache (see [`crate::event::Event::write_json`]).
pub struct EventLine(pub crate::event::Event);

thread_local! {
    static IDENTITIES: std::cell::RefCell<crate::event::IdentityJson> =
        std::cell::RefCell::new(crate::event::IdentityJson::default());
}

impl Encode for EventLine {
    fn encode(&self, buf: &mut Vec<u8>) -> bool {
        IDENTITIES.with(|ids| match ids.try_borrow_mut() {
            Ok(mut ids) => self.0.write_json(buf, &mut ids).is_ok(),
            Err(_) => serde_json::to_writer(buf, &self.0).is_ok(),
        })
    }
}

/// The bounded queue and the thread that drains it into a [`LineOut`].
pub struct LineWriter<E: Encode> {
    queue: super::queue::Queue<E>,
}

impl<E: Encode> LineWriter<E> {
    /// Starts the writer thread; `capacity` records may wait in the queue.
    pub fn spawn<O: LineOut>(out: O, capacity: usize) -> io::Result<Self> {
        let queue = super::queue::Queue::spawn("agentguard-jsonl", capacity, move |rx, st, _| {
            drain(rx, out, &st)
        })?;
        Ok(Self { queue })
    }

    /// Queues a record; never blocks. Returns false when it was dropped.
    pub fn send(&self, rec: E) -> bool {
        self.queue.send(rec)
    }

    pub fn stats(&self) -> &SinkStats {
        self.queue.stats()
    }

    pub fn stats_handle(&self) -> Arc<SinkStats> {
        Arc::clone(self.queue.stats())
    }

    /// Flushes everything queued and stops the thread.
    pub fn close(mut self) -> Arc<SinkStats> {
        self.queue.shutdown();
        Arc::clone(self.queue.stats())
    }
}

fn drain<E: Encode, O: LineOut>(rx: Receiver<E>, mut out: O, st: &SinkStats) {
    let mut line = Vec::with_capacity(1024);
    loop {
        // Block for the first record, then take whatever else is queued
        // before flushing: one write per burst.
        let Ok(first) = rx.recv() else { break };
        let mut next = Some(first);
        while let Some(rec) = next.take() {
            line.clear();
            if rec.encode(&mut line) {
                line.push(b'\n');
                if out.write_line(&line).is_err() {
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
}

/// `file:` entry of the `alerts:` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes; 0 never.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept: `PATH.1` (newest) .. `PATH.keep`.
    #[serde(default = "default_keep")]
    pub keep: u32,
    #[serde(default)]
    pub queue: Option<usize>,
}

pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;
pub const DEFAULT_KEEP: u32 = 5;

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_keep() -> u32 {
    DEFAULT_KEEP
}

/// The alert sink for stdout and files: pre-serialized alerts as lines.
pub struct JsonlSink {
    name: String,
    inner: LineWriter<Arc<[u8]>>,
}

impl JsonlSink {
    pub fn stdout(name: String, queue: usize) -> io::Result<JsonlSink> {
        Ok(JsonlSink {
            name,
            inner: LineWriter::spawn(Plain::new(io::stdout()), queue)?,
        })
    }

    pub fn file(name: String, cfg: &FileConfig) -> io::Result<JsonlSink> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let out = RotatingFile::open(&cfg.path, cfg.max_bytes, cfg.keep)?;
        Ok(JsonlSink {
            name,
            inner: LineWriter::spawn(out, cfg.queue.unwrap_or(super::DEFAULT_QUEUE))?,
        })
    }

    /// To any [`LineOut`] (tests, embedding).
    pub fn to(name: String, out: impl LineOut, queue: usize) -> io::Result<JsonlSink> {
        Ok(JsonlSink {
            name,
            inner: LineWriter::spawn(out, queue)?,
        })
    }
}

impl super::AlertSink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn send(&self, _alert: &crate::alert::Alert, json: &Arc<[u8]>) -> bool {
        self.inner.send(Arc::clone(json))
    }
    fn stats(&self) -> Arc<SinkStats> {
        self.inner.stats_handle()
    }
    fn close(self: Box<Self>) {
        self.inner.close();
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
        let sink = LineWriter::spawn(Plain::new(buf.clone()), 16).expect("spawn");
        for i in 0..10u32 {
            let line: Arc<[u8]> = serde_json::to_vec(&serde_json::json!({ "n": i }))
                .expect("json")
                .into();
            assert!(sink.send(line));
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
        let sink: LineWriter<Arc<[u8]>> =
            LineWriter::spawn(Plain::new(Stalled(Arc::clone(&gate))), 4).expect("spawn");
        // The writer takes one record and stalls; 4 fit in the queue; the
        // rest must be refused at once.
        let sent = (0..100u32)
            .filter(|i| sink.send(i.to_string().into_bytes().into()))
            .count();
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

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "agentguard-jsonl-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn rotating_file_cuts_between_lines_and_keeps_n() {
        let dir = temp_dir("rotate");
        let path = dir.join("alerts.jsonl");
        let mut f = RotatingFile::open(&path, 100, 2).expect("open");
        // 10 lines of 40 bytes: 2 per file (a third would pass 100).
        for i in 0..10u8 {
            let mut line = vec![b'a' + i; 39];
            line.push(b'\n');
            f.write_line(&line).expect("write");
        }
        f.flush().expect("flush");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        let cur = read(&path);
        assert_eq!(cur.lines().count(), 2);
        assert!(cur.starts_with(&"i".repeat(39)));
        let one = read(&RotatingFile::rotated_name(&path, 1));
        assert!(one.starts_with(&"g".repeat(39)), "{one}");
        let two = read(&RotatingFile::rotated_name(&path, 2));
        assert!(two.starts_with(&"e".repeat(39)), "{two}");
        assert!(!RotatingFile::rotated_name(&path, 3).exists());
        for p in [
            path.clone(),
            RotatingFile::rotated_name(&path, 1),
            RotatingFile::rotated_name(&path, 2),
        ] {
            assert!(std::fs::metadata(&p).expect("meta").len() <= 100);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotating_file_appends_to_an_existing_file() {
        let dir = temp_dir("append");
        let path = dir.join("a.jsonl");
        std::fs::write(&path, "old\n").expect("seed");
        let mut f = RotatingFile::open(&path, 0, 3).expect("open");
        f.write_line(b"new\n").expect("write");
        f.flush().expect("flush");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "old\nnew\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
