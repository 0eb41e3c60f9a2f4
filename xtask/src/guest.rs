//! `cargo xtask guest`: run a shell script as root in a Debian cloud kernel
//! booted in qemu (software emulation), with a pure cgroup v2 hierarchy and
//! BPF-LSM enabled, the release `agentguard` and the default policy pack.
//!
//! The guest is a busybox initramfs built here (a newc cpio). Its `/init`
//! mounts the usual filesystems, then runs the script with stdout and stderr
//! on the second serial port (ttyS1), which qemu hands to us on its stdout;
//! the kernel console is the first serial port (ttyS0), kept in a log file
//! that is shown only when the guest fails. After the script, `/init` writes
//! a marker with a per-run random nonce and the script's exit status, then
//! powers the guest off. There is no network device: nothing leaves the
//! guest.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use crate::setup::Setup;

/// Hostname of the guest.
const HOSTNAME: &str = "agentguard-guest";
/// Where the script is placed in the guest.
const GUEST_SCRIPT: &str = "/guest/script.sh";
/// How long a guest that printed its exit status may take to power off.
const POWEROFF_WAIT: Duration = Duration::from_secs(20);
/// Console lines shown when the guest fails.
const CONSOLE_TAIL: usize = 60;

/// A Debian cloud kernel series the guest can boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernel {
    /// Debian bookworm's `linux-image-cloud-amd64` (6.1.x).
    #[value(name = "6.1")]
    V6_1,
    /// Debian's `linux-image-6.12-cloud-amd64` (6.12.x+deb12, bookworm-security).
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub const ALL: [Kernel; 2] = [Kernel::V6_1, Kernel::V6_12];

    /// "6.1" or "6.12", as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }

    /// The Debian meta-package that depends on the newest kernel package
    /// of this series.
    pub fn meta_package(self) -> &'static str {
        match self {
            Kernel::V6_1 => "linux-image-cloud-amd64",
            Kernel::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }

    /// Cache directory: `target/vm/<version>/`.
    pub fn dir(self) -> PathBuf {
        crate::target_dir().join("vm").join(self.name())
    }

    /// The cached kernel image.
    pub fn vmlinuz(self) -> PathBuf {
        self.dir().join("vmlinuz")
    }

    /// The package the cached kernel came from, if known.
    fn package(self) -> Option<String> {
        std::fs::read_to_string(self.dir().join("vmlinuz.package"))
            .ok()
            .map(|s| s.trim().to_owned())
    }
}

#[derive(Args)]
pub struct GuestArgs {
    /// Kernel series to boot (fetched and cached under target/vm/<version>/).
    #[arg(long, value_enum, value_name = "VERSION")]
    kernel: Kernel,
    /// Put FILE in the guest's /bin under its file name, executable, with
    /// the shared libraries it needs (ldd). Repeatable.
    #[arg(long = "add", value_name = "FILE")]
    add: Vec<PathBuf>,
    /// The agentguard binary to install as /usr/bin/agentguard. Default:
    /// target/release/agentguard, built first (`cargo build --release -p
    /// agentguard`); with this option nothing is built.
    #[arg(long, value_name = "PATH")]
    agentguard: Option<PathBuf>,
    /// Give up (kill qemu, fail) after this many seconds, boot included.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Host shell script to run in the guest with `sh`, as root.
    #[arg(value_name = "SCRIPT")]
    script: PathBuf,
}

/// Runs the script in a guest; its exit status becomes ours.
pub fn run(args: &GuestArgs) -> Result<()> {
    let script = std::fs::read(&args.script)
        .with_context(|| format!("reading the script {}", args.script.display()))?;
    for file in &args.add {
        if !file.is_file() {
            bail!("--add {}: not a file", file.display());
        }
    }
    let mut setup = Setup::default();
    let vmlinuz = setup.guest(args.kernel)?;
    let agentguard = match &args.agentguard {
        Some(path) => {
            if !path.is_file() {
                bail!("--agentguard {}: not a file", path.display());
            }
            path.clone()
        }
        None => {
            setup.all(false)?;
            crate::build()?;
            crate::agentguard_bin()
        }
    };
    let busybox = crate::setup::busybox().context("no busybox after set-up")?;

    let nonce = nonce()?;
    let work = WorkDir::new(crate::target_dir().join("vm").join(format!(
        "run-{}-{}",
        std::process::id(),
        &nonce[..8]
    )))?;
    let initrd = work.0.join("initramfs.cpio");
    let image = Image {
        busybox: &busybox,
        agentguard: &agentguard,
        add: &args.add,
        script: &script,
        nonce: &nonce,
    };
    std::fs::write(&initrd, image.build(&work.0)?)
        .with_context(|| format!("writing {}", initrd.display()))?;

    let console = work.0.join("console.log");
    let package = args.kernel.package().unwrap_or_default();
    eprintln!(
        "xtask: booting Debian's {} kernel {package} in qemu (TCG) to run {} ...",
        args.kernel.name(),
        args.script.display()
    );
    let code = boot(
        &vmlinuz,
        &initrd,
        &console,
        &nonce,
        Duration::from_secs(args.timeout),
    )?;
    if code == 0 {
        Ok(())
    } else {
        Err(crate::Failed {
            what: format!(
                "guest --kernel {} {}",
                args.kernel.name(),
                args.script.display()
            ),
            code,
        }
        .into())
    }
}

/// 128 random bits as hex: the marker `/init` prints is
/// `AGENTGUARD-GUEST-<nonce> ...`, which the script cannot guess.
fn nonce() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A scratch directory, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The guest's `/init`. `@NONCE_FILE@`, `@HOSTNAME@` and `@SCRIPT@` are
/// filled in. Its own messages go to the kernel console.
const INIT: &str = r#"#!/bin/busybox sh
# cargo xtask guest: set the guest up, run the script, power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
# Pure cgroup v2: no v1 hierarchy is ever mounted.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
ip link set lo up
hostname @HOSTNAME@
# The marker is read, then its file removed, so the script can't print it.
MARK="AGENTGUARD-GUEST-$(cat @NONCE_FILE@)"
rm -f @NONCE_FILE@
OUT=/dev/ttyS1
# Raw: the script's bytes reach the host unchanged (no \n -> \r\n).
stty -F $OUT raw -echo
printf '%s booted\n' "$MARK" >$OUT
cd /root
sh @SCRIPT@ </dev/null >$OUT 2>&1
RC=$?
printf '%s exit %s\n' "$MARK" "$RC" >$OUT
# stty waits until the port has sent everything (TCSADRAIN).
stty -F $OUT raw -echo
sync
poweroff -f
"#;

const NONCE_FILE: &str = "/guest/nonce";

/// What goes into the initramfs.
struct Image<'a> {
    busybox: &'a Path,
    agentguard: &'a Path,
    add: &'a [PathBuf],
    script: &'a [u8],
    nonce: &'a str,
}

impl Image<'_> {
    fn build(&self, work: &Path) -> Result<Vec<u8>> {
        let mut c = Cpio::default();
        for d in [
            "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "dev", "guest",
        ] {
            c.dir(d);
        }
        // The kernel opens /dev/console for init's stdio before devtmpfs
        // is mounted.
        c.entry("dev/console", 0o020_600, (5, 1), &[]);

        let mut libs = Vec::new();
        c.host_file("bin/busybox", self.busybox, 0o755)?;
        libs.extend(libraries(self.busybox)?);

        // Debug info is most of the binary; the guest keeps it all in RAM.
        let stripped = work.join("agentguard");
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(self.agentguard)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let agentguard = if ok { &stripped } else { self.agentguard };
        c.host_file("usr/bin/agentguard", agentguard, 0o755)?;
        libs.extend(libraries(self.agentguard)?);

        for file in self.add {
            let name = file
                .file_name()
                .with_context(|| format!("--add {}: no file name", file.display()))?;
            c.host_file(&format!("bin/{}", name.to_string_lossy()), file, 0o755)?;
            libs.extend(libraries(file)?);
        }
        let mut seen = HashSet::new();
        for lib in libs {
            if seen.insert(lib.clone()) {
                let mode = mode_of(&lib)?;
                c.host_file(&lib.to_string_lossy(), &lib, mode)?;
            }
        }

        c.dir("etc/agentguard");
        add_tree(
            &mut c,
            &crate::root().join("policies"),
            "etc/agentguard/policies",
        )?;

        c.file(GUEST_SCRIPT, 0o755, self.script);
        c.file(NONCE_FILE, 0o600, self.nonce.as_bytes());
        let init = INIT
            .replace("@NONCE_FILE@", NONCE_FILE)
            .replace("@HOSTNAME@", HOSTNAME)
            .replace("@SCRIPT@", GUEST_SCRIPT);
        c.file("init", 0o755, init.as_bytes());
        Ok(c.finish())
    }
}

/// Permission bits of a host file.
fn mode_of(path: &Path) -> Result<u32> {
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// `host` (a directory) and everything under it, at `guest`.
fn add_tree(c: &mut Cpio, host: &Path, guest: &str) -> Result<()> {
    c.dir(guest);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(host)
        .with_context(|| format!("reading {}", host.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let inside = format!("{guest}/{name}");
        if path.is_dir() {
            add_tree(c, &path, &inside)?;
        } else if path.is_file() {
            c.host_file(&inside, &path, mode_of(&path)?)?;
        }
    }
    Ok(())
}

/// A newc ("070701") cpio archive, the format the kernel unpacks as its
/// initramfs. Parent directories are added before their contents.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: HashSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// `name` and its missing parents.
    fn dir(&mut self, name: &str) {
        let name = name.trim_matches('/');
        if name.is_empty() || self.dirs.contains(name) {
            return;
        }
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(name.to_owned());
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(name, 0o100_000 | mode, (0, 0), data);
    }

    fn host_file(&mut self, guest: &str, host: &Path, mode: u32) -> Result<()> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, mode, &data);
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// The shared libraries a host binary loads (ldd); none for a static
/// binary or a script.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .stderr(Stdio::null())
        .output()
        .context("could not run ldd")?;
    if !out.status.success() {
        // "not a dynamic executable"
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// What came out of the guest's ttyS1.
enum Output {
    Data(Vec<u8>),
    Eof,
}

/// Boots the guest, streams the script's output to stdout and returns its
/// exit status.
fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    console: &Path,
    nonce: &str,
    timeout: Duration,
) -> Result<u8> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        // No default devices, above all no network card: nothing may
        // leave the guest.
        .args(["-nodefaults", "-no-user-config", "-nic", "none"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        // ttyS0: kernel console, to a file; ttyS1: the script, to our pipe.
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 quiet loglevel=1 panic=-1 lsm=lockdown,capability,bpf",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let what = crate::describe(&cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{what}`"))?;
    let qemu = KillOnDrop(&mut child);
    let mut stdout = qemu.0.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Output::Eof);
                    break;
                }
                Ok(n) => {
                    if tx.send(Output::Data(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let deadline = start + timeout;
    let mut stream = MarkerStream::new(format!("AGENTGUARD-GUEST-{nonce} "));
    let mut out = std::io::stdout().lock();
    let code = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match rx.recv_timeout(left.min(LOCKUP_POLL)) {
            Ok(Output::Data(chunk)) => chunk,
            Ok(Output::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // qemu closed its stdout: it has exited or is about to.
                let status = wait_a_little(qemu.0, Duration::from_secs(5));
                let status = status.map_or("still running".to_owned(), |s| s.to_string());
                out.flush()?;
                bail!(
                    "the guest stopped before the script finished (qemu: {status}){}",
                    console_tail(console)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                // A guest CPU spinning in its kernel for minutes never comes
                // back: say so now rather than at the deadline.
                if let Some(secs) = stuck_secs(console).filter(|s| *s >= LOCKUP_GIVE_UP_SECS) {
                    out.flush()?;
                    bail!(
                        "the guest kernel reported a soft lockup (a CPU stuck for {secs} s); qemu killed{}",
                        console_tail(console)
                    );
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                out.flush()?;
                bail!(
                    "the guest did not finish within {} s; qemu killed{}",
                    timeout.as_secs(),
                    console_tail(console)
                );
            }
        };
        let mut done = None;
        for event in stream.push(&chunk) {
            match event {
                Event::Output(data) => {
                    out.write_all(&data)?;
                }
                Event::Marker(m) if m == "booted" => eprintln!(
                    "xtask: guest booted in {:.1} s, running the script ...",
                    start.elapsed().as_secs_f64()
                ),
                Event::Marker(m) => match m.strip_prefix("exit ").map(str::parse::<u8>) {
                    Some(Ok(code)) => done = Some(code),
                    _ => bail!("unexpected guest marker {m:?}"),
                },
            }
        }
        out.flush()?;
        if let Some(code) = done {
            break code;
        }
    };
    if wait_a_little(qemu.0, POWEROFF_WAIT).is_none() {
        eprintln!(
            "xtask: the guest did not power off within {} s; killing qemu",
            POWEROFF_WAIT.as_secs()
        );
    }
    eprintln!(
        "xtask: guest script exited with {code} after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(code)
}

/// qemu's exit status if it exits within `wait`.
fn wait_a_little(child: &mut Child, wait: Duration) -> Option<std::process::ExitStatus> {
    let stop = Instant::now() + wait;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < stop => std::thread::sleep(Duration::from_millis(50)),
            _ => return None,
        }
    }
}

/// Kills and reaps qemu on every way out.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The last lines of the kernel console, for error messages.
/// How often the console is looked at for a soft lockup while the script
/// is silent.
const LOCKUP_POLL: Duration = Duration::from_secs(5);
/// A CPU reported stuck this long is taken as hung for good.
const LOCKUP_GIVE_UP_SECS: u64 = 100;

/// The longest "soft lockup - CPU#N stuck for Ns!" the guest kernel has
/// reported so far.
fn stuck_secs(console: &Path) -> Option<u64> {
    let text = std::fs::read(console).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| {
            l.split_once("stuck for ")?
                .1
                .split_once('s')?
                .0
                .parse()
                .ok()
        })
        .max()
}

fn console_tail(console: &Path) -> String {
    let text = std::fs::read(console)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "; the kernel console is empty".to_owned();
    }
    let tail = &lines[lines.len().saturating_sub(CONSOLE_TAIL)..];
    format!("; last lines of the kernel console:\n{}", tail.join("\n"))
}

#[derive(Debug, PartialEq)]
enum Event {
    /// Script output, exactly as written.
    Output(Vec<u8>),
    /// What followed the marker on its line ("booted", "exit N").
    Marker(String),
}

/// Splits the guest's byte stream into script output and marker lines.
/// Output is passed on as soon as it can't be the start of a marker.
struct MarkerStream {
    marker: Vec<u8>,
    pending: Vec<u8>,
}

impl MarkerStream {
    fn new(marker: String) -> Self {
        MarkerStream {
            marker: marker.into_bytes(),
            pending: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        loop {
            match find(&self.pending, &self.marker) {
                Some(at) => {
                    let rest = at + self.marker.len();
                    let Some(nl) = self.pending[rest..].iter().position(|&b| b == b'\n') else {
                        // The marker line is not complete yet.
                        if at > 0 {
                            events.push(Event::Output(self.pending.drain(..at).collect()));
                        }
                        return events;
                    };
                    if at > 0 {
                        events.push(Event::Output(self.pending[..at].to_vec()));
                    }
                    let text = String::from_utf8_lossy(&self.pending[rest..rest + nl])
                        .trim()
                        .to_owned();
                    events.push(Event::Marker(text));
                    self.pending.drain(..rest + nl + 1);
                }
                None => {
                    // Keep what could be the beginning of a marker.
                    let keep = (1..self.marker.len())
                        .rev()
                        .find(|&k| {
                            k <= self.pending.len() && self.pending.ends_with(&self.marker[..k])
                        })
                        .unwrap_or(0);
                    let emit = self.pending.len() - keep;
                    if emit > 0 {
                        events.push(Event::Output(self.pending.drain(..emit).collect()));
                    }
                    return events;
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_lockups_are_read_from_the_console() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-lockup-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let console = dir.join("console.log");
        std::fs::write(&console, "[    1.0] booting\n")?;
        assert_eq!(stuck_secs(&console), None);
        std::fs::write(
            &console,
            "[   76.3] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [exe:613]\n\
             [  160.3] watchdog: BUG: soft lockup - CPU#1 stuck for 104s! [exe:613]\n",
        )?;
        assert_eq!(stuck_secs(&console), Some(104));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
        let mut s = MarkerStream::new("MARK-x ".to_owned());
        let (mut out, mut marks) = (Vec::new(), Vec::new());
        for c in chunks {
            for e in s.push(c) {
                match e {
                    Event::Output(d) => out.extend(d),
                    Event::Marker(m) => marks.push(m),
                }
            }
        }
        (out, marks)
    }

    #[test]
    fn markers_are_cut_out_of_the_output() {
        let (out, marks) = run(&[b"MARK-x booted\nhello\nno newline", b"MARK-x exit 3\n"]);
        assert_eq!(out, b"hello\nno newline");
        assert_eq!(marks, ["booted", "exit 3"]);
    }

    #[test]
    fn a_marker_split_across_reads_is_found() {
        let (out, marks) = run(&[b"abc MA", b"RK", b"-x ex", b"it 0", b"\n"]);
        assert_eq!(out, b"abc ");
        assert_eq!(marks, ["exit 0"]);
    }

    #[test]
    fn output_resembling_a_marker_is_passed_on() {
        let (out, marks) = run(&[b"MARK-y exit 1\nMARK", b"-\n"]);
        assert_eq!(out, b"MARK-y exit 1\nMARK-\n");
        assert!(marks.is_empty());
    }

    #[test]
    fn ldd_output_is_parsed() {
        let libs = parse_ldd(
            "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n",
        );
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }
}
