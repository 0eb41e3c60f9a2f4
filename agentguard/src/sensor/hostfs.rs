//! Host filesystem facts the sensor and `check` need: tracefs, bpffs and
//! securityfs (found, or mounted), the cgroup v2 mount, mountinfo parsing.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::bpfsys::{errno, errno_text};

pub(super) const TRACEFS: &str = "/sys/kernel/tracing";
pub(super) const TRACEFS_DEBUG: &str = "/sys/kernel/debug/tracing";
pub(super) const BPFFS: &str = "/sys/fs/bpf";
pub(super) const SECURITYFS: &str = "/sys/kernel/security";
pub(super) const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

// statfs f_type values (linux/magic.h).
pub(super) const TRACEFS_MAGIC: i64 = 0x7472_6163;
pub(super) const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
pub(super) const SECURITYFS_MAGIC: i64 = 0x7363_6673;

// -------------------------------------------------------------- mounts --

/// One parsed /proc/self/mountinfo line: (mount point, fs type).
pub(super) fn mountinfo_entries(text: &str) -> Vec<(PathBuf, String)> {
    text.lines()
        .filter_map(|line| {
            // "36 35 98:0 /root /mnt opts [optional...] - fstype source superopts"
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            Some((
                PathBuf::from(unescape_mountinfo(mount_point)),
                fstype.to_owned(),
            ))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub(super) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let oct = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok());
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where cgroup v2 is mounted: /sys/fs/cgroup on pure v2 hosts,
/// /sys/fs/cgroup/unified on hybrid ones, else the first cgroup2 mount.
pub fn cgroup2_mount() -> Option<PathBuf> {
    find_cgroup2_mount().ok().flatten()
}

/// [`cgroup2_mount`], keeping why mountinfo could not be read.
pub(super) fn find_cgroup2_mount() -> Result<Option<PathBuf>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    Ok(pick_cgroup2(&mountinfo_entries(&text)))
}

pub(super) fn pick_cgroup2(entries: &[(PathBuf, String)]) -> Option<PathBuf> {
    let v2: Vec<&PathBuf> = entries
        .iter()
        .filter(|(_, t)| t == "cgroup2")
        .map(|(p, _)| p)
        .collect();
    for preferred in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Some(p) = v2.iter().find(|p| p.as_os_str() == preferred) {
            return Some((*p).clone());
        }
    }
    v2.first().map(|p| (*p).clone())
}

pub(super) fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is writable. statfs follows
    // automounts, so it also triggers the debugfs tracing automount.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by libc
    Some(st.f_type as i64)
}

pub(super) fn mount_fs(fstype: &str, target: &str) -> Result<(), String> {
    let src = CString::new(fstype).map_err(|e| e.to_string())?;
    let tgt = CString::new(target).map_err(|e| e.to_string())?;
    // SAFETY: all strings are NUL-terminated and outlive the call; no data
    // argument is passed.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = errno();
    let hint = match e {
        libc::EPERM => " (needs root: CAP_SYS_ADMIN)",
        libc::ENODEV => " (this kernel does not have that filesystem)",
        libc::ENOENT => " (mount point missing)",
        _ => "",
    };
    Err(format!(
        "mount -t {fstype} {fstype} {target}: {}{hint}",
        errno_text(e)
    ))
}

/// Returns where tracefs is usable, mounting it at /sys/kernel/tracing
/// when neither that nor the debugfs location has it.
pub fn ensure_tracefs() -> Result<PathBuf, String> {
    for p in [TRACEFS, TRACEFS_DEBUG] {
        if fs_magic(Path::new(p)) == Some(TRACEFS_MAGIC) {
            return Ok(PathBuf::from(p));
        }
    }
    mount_fs("tracefs", TRACEFS).map_err(|e| format!("tracefs is not mounted and {e}"))?;
    if fs_magic(Path::new(TRACEFS)) == Some(TRACEFS_MAGIC) {
        Ok(PathBuf::from(TRACEFS))
    } else {
        Err(format!(
            "mounted tracefs at {TRACEFS} but it does not show up there"
        ))
    }
}

/// Mounts bpffs at /sys/fs/bpf when it is not there (needed to pin).
pub fn ensure_bpffs() -> Result<(), String> {
    if fs_magic(Path::new(BPFFS)) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    mount_fs("bpf", BPFFS).map_err(|e| format!("bpffs is not mounted and {e}"))
}

/// securityfs holds the LSM list and the lockdown mode.
pub(super) fn ensure_securityfs() -> Result<PathBuf, String> {
    if fs_magic(Path::new(SECURITYFS)) != Some(SECURITYFS_MAGIC) {
        mount_fs("securityfs", SECURITYFS)
            .map_err(|e| format!("securityfs is not mounted and {e}"))?;
    }
    Ok(PathBuf::from(SECURITYFS))
}
