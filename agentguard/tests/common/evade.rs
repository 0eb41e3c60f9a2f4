//! Builds and runs `tests/evade/evade.c`, the static helper that performs the
//! evasions an agent would try (io_uring, openat2, the i386 syscall ABI, a
//! path TOCTOU race, exec from a thread, ...). See `tests/evade/README.md`
//! for the subcommands and the output contract: one stdout line, `ok ...` or
//! `err ERRNO_NAME`, exit 0/1, and 2 for usage/setup failures.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/evade/evade.c")
}

/// The cargo target directory: `CARGO_TARGET_DIR` when it is absolute;
/// otherwise the parent of `CARGO_TARGET_TMPDIR` (cargo sets it, as
/// `<target>/tmp`, when building integration tests, so it also covers a
/// relative `CARGO_TARGET_DIR` or a `build.target-dir` config); otherwise
/// `<CARGO_MANIFEST_DIR>/../target`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            return dir;
        }
    }
    if let Some(parent) = option_env!("CARGO_TARGET_TMPDIR").and_then(|t| Path::new(t).parent()) {
        return parent.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Compiles `src` into `bin` through a unique temporary name and an atomic
/// rename, so concurrent test binaries never see (or exec) a partial file.
fn compile(src: &Path, bin: &Path) {
    let dir = bin.parent().expect("evade binary path has a parent");
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".evade.{}.{nanos}.tmp", std::process::id()));
    let out = Command::new("cc")
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&tmp)
        .arg(src)
        .arg("-lpthread")
        .output()
        .unwrap_or_else(|e| panic!("running cc to build {}: {e}", src.display()));
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        panic!(
            "cc failed ({}) building {}:\n{}",
            out.status,
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Err(e) = fs::rename(&tmp, bin) {
        let _ = fs::remove_file(&tmp);
        panic!("rename {} -> {}: {e}", tmp.display(), bin.display());
    }
}

/// Path of the `evade` binary, `<target dir>/evade/evade`, (re)built once per
/// test-binary run when missing or older than `evade.c`.
pub fn evade_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = source();
        let bin = target_dir().join("evade").join("evade");
        match (mtime(&src), mtime(&bin)) {
            // Up to date, or no source to rebuild from (binary copied alone).
            (Some(s), Some(b)) if b >= s => {}
            (None, Some(_)) => {}
            (None, None) => panic!("{} is missing and cannot be built", src.display()),
            _ => compile(&src, &bin),
        }
        bin
    })
    .clone()
}

/// A `Command` for `evade ARGS...`, for callers that need to set a uid,
/// cwd, environment or cgroup before running it.
pub fn evade_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(evade_bin());
    cmd.args(args);
    cmd
}

/// Runs `evade ARGS...` and returns its full output; its stderr is echoed to
/// the test's stderr (shown by libtest when the test fails).
pub fn evade_output(args: &[&str]) -> Output {
    let out = evade_command(args)
        .output()
        .unwrap_or_else(|e| panic!("running evade {args:?}: {e}"));
    if !out.stderr.is_empty() {
        eprint!(
            "evade {args:?} stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs `evade ARGS...`; returns its stdout without the trailing newline
/// (normally the single result line, e.g. `"ok bytes=3"` or `"err EPERM"`)
/// and its exit status (`.signal()` is set if the guard killed it).
pub fn evade(args: &[&str]) -> (String, ExitStatus) {
    let out = evade_output(args);
    let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    (stdout, out.status)
}
