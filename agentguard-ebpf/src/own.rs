//! Files a guarded container created itself (git's `index.lock`, an
//! editor's or compiler's temp file): a volume rule protects the data that
//! was in the volume, so it lets the container remove those, and only those.
//!
//! Tracepoint backend. At a removal's syscall entry the kernel has only the
//! path string, so the creating open records (container, absolute path) ->
//! the dentry it got. A later removal of the same string is the
//! container's own file only while:
//! - that dentry is still hashed, under the same parent, with the same name
//!   (a rename or unlink of it, or a new file at the name, fails this);
//! - it holds the same inode (number and generation: a reused negative
//!   dentry holding another file fails this);
//! - no guarded task renamed anything but its own files since the creation
//!   (`OWN_EPOCH`): a directory moved away and replaced by a symlink would
//!   make the same string reach another directory's file.
//!
//! An rmdir can't leave a directory empty of a live own file, so swapping
//! a directory needs a rename, which resets the epoch.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user_str_bytes,
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};

use agentguard_common::{
    enforce::{OwnFile, OwnKey, OWN_FILE_ENTRIES},
    event::PATH_LEN,
};

use crate::kernel::{self, read_u32, read_u64, KPath};

#[map]
static OWN_FILES: LruHashMap<OwnKey, OwnFile> = LruHashMap::with_max_entries(OWN_FILE_ENTRIES, 0);

/// CLOCK_BOOTTIME ns of the last rename by a guarded task that was not of
/// one of its own files: entries created before it no longer count.
#[map]
static OWN_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// The key under construction (too large for the stack).
#[map]
static OWN_KEY: PerCpuArray<OwnKey> = PerCpuArray::with_max_entries(1, 0);

/// `FMODE_CREATED`: the open created the file (the same bit since 4.19).
const FMODE_CREATED: u32 = 0x10_0000;

/// A zeroed key for the current cgroup; None when the scratch is missing.
#[inline(always)]
fn fresh_key() -> Option<&'static mut OwnKey> {
    let k = OWN_KEY.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, exclusively this program run's.
    let k = unsafe { &mut *k };
    k.path = [0; PATH_LEN];
    // SAFETY: helper without preconditions.
    k.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    Some(k)
}

/// Did the open that returned `file` create it?
#[inline(always)]
pub fn created(file: u64) -> bool {
    read_u32(file + kernel::OFF_FILE_MODE.load()).is_ok_and(|m| m & FMODE_CREATED != 0)
}

/// The dentry's identity as an `OwnFile` (without the time).
#[inline(always)]
fn identity(dentry: u64) -> Result<OwnFile, i32> {
    let parent = read_u64(dentry + kernel::OFF_DENTRY_PARENT.load())?;
    let hash_len = read_u64(dentry + kernel::OFF_DENTRY_NAME.load())?;
    let inode = read_u64(dentry + kernel::OFF_DENTRY_INODE.load())?;
    if inode == 0 {
        return Err(-2);
    }
    Ok(OwnFile {
        dentry,
        parent,
        hash_len,
        ino: read_u64(inode + kernel::OFF_INODE_INO.load())?,
        generation: read_u32(inode + kernel::OFF_INODE_GENERATION.load())?,
        _pad: 0,
        at: 0,
    })
}

/// Records a file the current container just created at the user path
/// `path` (absolute only), when `covered` says a volume rule of the
/// container covers that path. `file`/`obj`: what the open returned.
#[inline(always)]
pub fn note_user(path: u64, file: u64, obj: KPath, covered: impl Fn(&[u8; PATH_LEN]) -> bool) {
    if !created(file) {
        return;
    }
    let Some(k) = fresh_key() else {
        return;
    };
    // SAFETY: the helper bounds the copy by the buffer and reports faults.
    match unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut k.path) } {
        Ok(s) if s.len() < PATH_LEN - 1 => note(k, obj, covered),
        _ => {}
    }
}

/// [`note_user`] for a path already copied into the kernel (`path` may
/// hold stale bytes after its NUL).
#[inline(always)]
pub fn note_copied(
    path: &[u8; PATH_LEN],
    file: u64,
    obj: KPath,
    covered: impl Fn(&[u8; PATH_LEN]) -> bool,
) {
    if !created(file) {
        return;
    }
    let Some(k) = fresh_key() else {
        return;
    };
    if copy(path, k) {
        note(k, obj, covered);
    }
}

/// Copies a kernel-side path string into the key; false when it may be
/// cut (a long path would share its key with any other of the same head).
#[inline(always)]
fn copy(path: &[u8; PATH_LEN], k: &mut OwnKey) -> bool {
    // SAFETY: copies up to the NUL within the buffer; faults reported.
    unsafe { bpf_probe_read_kernel_str_bytes(path.as_ptr(), &mut k.path) }
        .is_ok_and(|s| s.len() < PATH_LEN - 1)
}

#[inline(always)]
fn note(k: &mut OwnKey, obj: KPath, covered: impl Fn(&[u8; PATH_LEN]) -> bool) {
    if k.path[0] != b'/' || !covered(&k.path) {
        return;
    }
    let Ok(mut v) = identity(obj.dentry) else {
        return;
    };
    // SAFETY: helper without preconditions.
    v.at = unsafe { bpf_ktime_get_boot_ns() };
    let _ = OWN_FILES.insert(k, &v, 0);
}

/// Is the absolute `path` (a removal's or rename's source, as passed)
/// still a file the current container created itself? See the module
/// comment for what is checked.
#[inline(always)]
pub fn is_own(path: &[u8; PATH_LEN]) -> bool {
    if path[0] != b'/' {
        return false;
    }
    let Some(k) = fresh_key() else {
        return false;
    };
    if !copy(path, k) {
        return false;
    }
    // SAFETY: value copied out at once.
    let Some(v) = (unsafe { OWN_FILES.get(k) }).copied() else {
        return false;
    };
    if v.at <= epoch() {
        return false;
    }
    // Hashed: `d_hash.pprev` is set while the name is in the dcache.
    let hashed = read_u64(v.dentry + kernel::OFF_DENTRY_HASH.load() + 8).is_ok_and(|p| p != 0);
    hashed
        && identity(v.dentry).is_ok_and(|now| {
            now.parent == v.parent
                && now.hash_len == v.hash_len
                && now.ino == v.ino
                && now.generation == v.generation
        })
}

#[inline(always)]
fn epoch() -> u64 {
    OWN_EPOCH.get_ptr(0).map_or(u64::MAX, |e| {
        // SAFETY: an array value, valid while the program runs; an aligned
        // 8-byte load.
        unsafe { core::ptr::read_volatile(e) }
    })
}

/// A guarded task renamed something that was not its own file: what
/// containers created before now no longer counts as theirs.
#[inline(always)]
pub fn reset_epoch() {
    if let Some(e) = OWN_EPOCH.get_ptr_mut(0) {
        // SAFETY: as in epoch(); an aligned 8-byte store, never torn.
        unsafe { core::ptr::write_volatile(e, bpf_ktime_get_boot_ns()) };
    }
}
