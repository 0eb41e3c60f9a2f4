//! Reads of kernel memory at offsets taken from the running kernel's BTF.
//!
//! rustc emits no CO-RE relocations, so userspace looks each offset up in
//! /sys/kernel/btf/vmlinux and overrides these globals before load.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    Global,
};

use agentguard_common::event::{dir_status, DIR_LEN, MAX_DIR_STEPS, NAME_LEN};

macro_rules! offsets {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            pub static $name: Global<u64> = Global::new(0);
        )*
    };
}

offsets!(
    OFF_TASK_REAL_PARENT,
    OFF_TASK_TGID,
    OFF_TASK_EXIT_CODE,
    OFF_TASK_GROUP_LEADER,
    OFF_TASK_START_BOOTTIME,
    OFF_TASK_FS,
    OFF_TASK_FILES,
    OFF_FS_ROOT,
    OFF_FS_PWD,
    OFF_PATH_MNT,
    OFF_PATH_DENTRY,
    OFF_DENTRY_PARENT,
    OFF_DENTRY_NAME,
    OFF_QSTR_NAME,
    OFF_MOUNT_MNT,
    OFF_MOUNT_PARENT,
    OFF_MOUNT_MOUNTPOINT,
    OFF_VFSMOUNT_ROOT,
    OFF_FILES_FDT,
    OFF_FDT_MAX_FDS,
    OFF_FDT_FD,
    OFF_FILE_PATH,
    OFF_DENTRY_INODE,
    OFF_INODE_INO,
    OFF_INODE_MODE,
    OFF_INODE_SB,
    OFF_SB_DEV,
    OFF_BPRM_FILE,
    OFF_UNIX_SOCK_PATH,
    OFF_MSGHDR_NAME,
    OFF_FILE_FLAGS,
    OFF_FILE_MODE,
    OFF_DENTRY_HASH,
    OFF_INODE_GENERATION,
);

/// Offsets of `task_struct.signal` and `signal_struct.live` (an
/// atomic_t), or u64::MAX where unknown.
#[no_mangle]
pub static OFF_TASK_SIGNAL: Global<u64> = Global::new(u64::MAX);
#[no_mangle]
pub static OFF_SIGNAL_LIVE: Global<u64> = Global::new(u64::MAX);

/// Whether the current task's thread group has no live thread left.
#[inline(always)]
pub fn thread_group_empty() -> Option<bool> {
    let (a, b) = (OFF_TASK_SIGNAL.load(), OFF_SIGNAL_LIVE.load());
    if a == u64::MAX || b == u64::MAX {
        return None;
    }
    let signal = read_u64(current_task() + a).ok()?;
    Some(read_u32(signal + b).ok()? == 0)
}

/// Offset of `task_struct.thread_info.status` (x86's TS_COMPAT lives
/// there), or u64::MAX where the kernel has none.
#[no_mangle]
pub static OFF_TASK_TI_STATUS: Global<u64> = Global::new(u64::MAX);

const TS_COMPAT: u32 = 0x0002;

/// Is the current task inside a 32-bit ABI syscall?
#[inline(always)]
pub fn in_compat_syscall() -> bool {
    let off = OFF_TASK_TI_STATUS.load();
    if off == u64::MAX {
        return false;
    }
    read_u32(current_task() + off).is_ok_and(|s| s & TS_COMPAT != 0)
}

#[inline(always)]
pub fn read_u64(addr: u64) -> Result<u64, i32> {
    // SAFETY: bpf_probe_read_kernel tolerates any address (returns an error
    // instead of faulting); the value is plain data.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }
}

#[inline(always)]
pub fn read_u32(addr: u64) -> Result<u32, i32> {
    // SAFETY: as in read_u64.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }
}

#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: the helper has no preconditions; the result is only used as an
    // address for bpf_probe_read_kernel.
    unsafe { bpf_get_current_task() }
}

/// When the current process started (its group leader's
/// `start_boottime`, CLOCK_BOOTTIME ns); None when unreadable.
#[inline(always)]
pub fn current_start_boottime() -> Option<u64> {
    let leader = read_u64(current_task() + OFF_TASK_GROUP_LEADER.load()).ok()?;
    read_u64(leader + OFF_TASK_START_BOOTTIME.load()).ok()
}

/// tgid of the current task's real parent, 0 when unreadable.
#[inline(always)]
pub fn current_ppid() -> u32 {
    let task = current_task();
    match read_u64(task + OFF_TASK_REAL_PARENT.load()) {
        Ok(parent) => read_u32(parent + OFF_TASK_TGID.load()).unwrap_or(0),
        Err(_) => 0,
    }
}

/// `task->exit_code` of the current task.
#[inline(always)]
pub fn current_exit_code() -> u32 {
    read_u32(current_task() + OFF_TASK_EXIT_CODE.load()).unwrap_or(0)
}

/// A `struct path`: (vfsmount, dentry).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KPath {
    pub mnt: u64,
    pub dentry: u64,
}

#[inline(always)]
pub fn read_path(addr: u64) -> Result<KPath, i32> {
    if OFF_PATH_MNT.load() == 0 && OFF_PATH_DENTRY.load() == 8 {
        // Every kernel's layout: one read for both.
        // SAFETY: bpf_probe_read_kernel tolerates any address.
        let [mnt, dentry] = unsafe { bpf_probe_read_kernel(addr as *const [u64; 2]) }?;
        return Ok(KPath { mnt, dentry });
    }
    Ok(KPath {
        mnt: read_u64(addr + OFF_PATH_MNT.load())?,
        dentry: read_u64(addr + OFF_PATH_DENTRY.load())?,
    })
}

/// Each cgroup's root at its first exec: for a container, the root its
/// entrypoint was started in (after the runtime's pivot_root). Compared,
/// never dereferenced.
#[aya_ebpf::macros::map]
static CGROUP_ROOTS: aya_ebpf::maps::LruHashMap<u64, KPath> =
    aya_ebpf::maps::LruHashMap::with_max_entries(16384, 0);

/// At an exec: records the cgroup's root if it has none yet.
#[inline(always)]
pub fn note_cgroup_root() {
    // SAFETY: helper without preconditions.
    let cg = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
    // SAFETY: presence test only.
    if unsafe { CGROUP_ROOTS.get(&cg) }.is_some() {
        return;
    }
    if let Ok(root) = task_root() {
        let _ = CGROUP_ROOTS.insert(&cg, &root, 0);
    }
}

/// The current task's (root, cwd). The root where walks stop: for a task
/// of a guarded container, the container's root even if the task
/// chroot()ed below it, so `chroot /root; cat /.ssh/id_rsa` still reads
/// as `/root/.ssh/id_rsa`. Other tasks (a chrooted build on the host)
/// keep their own root.
#[inline(always)]
pub fn fs_paths(task: u64) -> Result<(KPath, KPath), i32> {
    let fs = read_u64(task + OFF_TASK_FS.load())?;
    let root = read_path(fs + OFF_FS_ROOT.load())?;
    let cwd = read_path(fs + OFF_FS_PWD.load())?;
    Ok((container_root().unwrap_or(root), cwd))
}

/// The recorded root of the current task's cgroup, when the cgroup is a
/// guarded container.
#[inline(always)]
fn container_root() -> Option<KPath> {
    // SAFETY: helper without preconditions.
    let cg = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
    // SAFETY: presence test only.
    if unsafe { crate::enforce::ENFORCE_CGROUPS.get(&cg) }.is_none_or(|m| *m == 0) {
        return None;
    }
    // SAFETY: value copied out at once.
    unsafe { CGROUP_ROOTS.get(&cg) }.copied()
}

/// The inode number of the pipe `fd` of `task` is, or 0 when it is not
/// one (or can't be read).
#[inline(always)]
pub fn fd_pipe(task: u64, fd: i32) -> u64 {
    const S_IFMT: u16 = 0o170000;
    const S_IFIFO: u16 = 0o010000;
    let Ok(p) = fd_path(task, fd) else {
        return 0;
    };
    let Ok(inode) = read_u64(p.dentry + OFF_DENTRY_INODE.load()) else {
        return 0;
    };
    if inode == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    let mode: u16 = unsafe { bpf_probe_read_kernel((inode + OFF_INODE_MODE.load()) as *const u16) }
        .unwrap_or(0);
    if mode & S_IFMT != S_IFIFO {
        return 0;
    }
    read_u64(inode + OFF_INODE_INO.load()).unwrap_or(0)
}

/// `f_path` of the current task's open file `fd`.
#[inline(always)]
pub fn fd_path(task: u64, fd: i32) -> Result<KPath, i32> {
    read_path(fd_file(task, fd)? + OFF_FILE_PATH.load())
}

/// The `struct file` of the current task's open file `fd`.
#[inline(always)]
pub fn fd_file(task: u64, fd: i32) -> Result<u64, i32> {
    if fd < 0 {
        return Err(-9);
    }
    let files = read_u64(task + OFF_TASK_FILES.load())?;
    let fdt = read_u64(files + OFF_FILES_FDT.load())?;
    let (max, fds) = if OFF_FDT_MAX_FDS.load() == 0 && OFF_FDT_FD.load() == 8 {
        // Every kernel's layout: one read for both.
        // SAFETY: bpf_probe_read_kernel tolerates any address.
        let [max, fds] = unsafe { bpf_probe_read_kernel(fdt as *const [u64; 2]) }?;
        (max as u32, fds)
    } else {
        (
            read_u32(fdt + OFF_FDT_MAX_FDS.load())?,
            read_u64(fdt + OFF_FDT_FD.load())?,
        )
    };
    if fd as u32 >= max {
        return Err(-9);
    }
    let file = read_u64(fds + (fd as u64) * 8)?;
    if file == 0 {
        return Err(-9);
    }
    Ok(file)
}

/// Which scratch record's DirChain a walk fills (see `crate::dir_slot`).
pub mod slot {
    pub const FILE: u32 = 0;
    pub const RENAME_OLD: u32 = 1;
    pub const RENAME_NEW: u32 = 2;
    pub const EXEC: u32 = 3;
    /// This thread's pending open record (its file's path at exit).
    pub const PENDING_FILE: u32 = 4;
}

/// The DirChain of `slot`, emptied and marked FAILED until a walk fills it.
#[inline(always)]
fn empty_chain(slot: u32) -> Option<*mut agentguard_common::event::DirChain> {
    let dir = crate::dir_slot(slot)?;
    // SAFETY: a chain in per-CPU scratch memory or this thread's pending
    // record, owned by this program run; raw pointer writes because the
    // walk callback writes the same record.
    unsafe {
        (*dir).len = 0;
        (*dir).depth = 0;
        (*dir).status = dir_status::FAILED;
    }
    Some(dir)
}

/// Fills the DirChain of `slot` with the directory a relative path is
/// resolved against: the cwd for `AT_FDCWD`, else the directory open as
/// `dirfd`. Called only when the path is relative (or empty, AT_EMPTY_PATH).
#[inline(always)]
pub fn capture_dir(dirfd: i32, slot: u32) {
    let Some(dir) = empty_chain(slot) else {
        return;
    };
    let task = current_task();
    let Ok((root, cwd)) = fs_paths(task) else {
        return;
    };
    let start = if dirfd == agentguard_common::event::AT_FDCWD {
        cwd
    } else {
        match fd_path(task, dirfd) {
            Ok(p) => p,
            Err(_) => return,
        }
    };
    walk_into(start, root, dir, slot);
}

/// Fills the DirChain of `slot` with the path of a kernel object (the
/// object's own name first) up to the current task's root: what an LSM
/// hook reports, whatever string the process passed.
#[inline(always)]
pub fn capture_object(start: KPath, slot: u32) {
    let Some(dir) = empty_chain(slot) else {
        return;
    };
    let Ok((root, _)) = fs_paths(current_task()) else {
        return;
    };
    walk_into(start, root, dir, slot);
}

#[inline(always)]
fn walk_into(start: KPath, root: KPath, dir: *mut agentguard_common::event::DirChain, slot: u32) {
    let mut ctx = WalkCtx {
        dentry: start.dentry,
        vfsmnt: start.mnt,
        mnt: start.mnt.wrapping_sub(OFF_MOUNT_MNT.load()),
        root_dentry: root.dentry,
        root_mnt: root.mnt,
        len: 0,
        depth: 0,
        status: u64::from(dir_status::TRUNCATED),
        slot: u64::from(slot),
    };
    // bpf_loop: the verifier checks the step once instead of unrolling every
    // path through 40 iterations (which exceeds its 1M-instruction budget).
    // SAFETY: helper 181 with a static callback and a pointer to our stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_DIR_STEPS,
            walk_step as *mut core::ffi::c_void,
            (&mut ctx as *mut WalkCtx).cast(),
            0,
        );
    }
    // SAFETY: as above.
    unsafe {
        (*dir).len = ctx.len as u32;
        (*dir).depth = ctx.depth as u16;
        (*dir).status = ctx.status as u16;
    }
}

/// State of one directory walk, shared with the bpf_loop callback.
#[repr(C)]
struct WalkCtx {
    dentry: u64,
    vfsmnt: u64,
    mnt: u64,
    root_dentry: u64,
    root_mnt: u64,
    len: u64,
    depth: u64,
    status: u64,
    slot: u64,
}

/// One step of the walk (the kernel's d_path order: up the dentries, across
/// mount points, stopping at the task's root so container processes get
/// container paths). Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn walk_step(_index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to capture_dir's WalkCtx.
    let c = unsafe { &mut *(ctx as *mut WalkCtx) };
    match step(c) {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(_) => {
            c.status = u64::from(dir_status::FAILED);
            1
        }
    }
}

/// Where one step up from `(dentry, vfsmnt)` leads, in the kernel's d_path
/// order (up the dentries, across mount points), for both walks.
enum Up {
    /// At the root the walk stops at.
    Root,
    /// At the top of the mount tree without meeting that root (a detached
    /// mount, or an object outside the root).
    TopOfTree,
    /// At a mount's root: the cursor moved to its mount point (no name).
    Crossed,
    /// At a filesystem's root dentry (its own parent).
    FsRoot,
    /// An ordinary dentry; its parent (the cursor has not moved).
    Parent(u64),
}

#[inline(always)]
fn up(
    dentry: &mut u64,
    vfsmnt: &mut u64,
    mnt: &mut u64,
    root_dentry: u64,
    root_mnt: u64,
) -> Result<Up, i32> {
    if *dentry == root_dentry && *vfsmnt == root_mnt {
        return Ok(Up::Root);
    }
    let mnt_root = read_u64(*vfsmnt + OFF_VFSMOUNT_ROOT.load())?;
    if *dentry == mnt_root {
        let parent = read_u64(*mnt + OFF_MOUNT_PARENT.load())?;
        if parent == *mnt {
            return Ok(Up::TopOfTree);
        }
        *dentry = read_u64(*mnt + OFF_MOUNT_MOUNTPOINT.load())?;
        *mnt = parent;
        *vfsmnt = parent + OFF_MOUNT_MNT.load();
        return Ok(Up::Crossed);
    }
    let parent = read_u64(*dentry + OFF_DENTRY_PARENT.load())?;
    if parent == *dentry {
        return Ok(Up::FsRoot);
    }
    Ok(Up::Parent(parent))
}

#[inline(always)]
fn step(c: &mut WalkCtx) -> Result<bool, i32> {
    let parent = match up(
        &mut c.dentry,
        &mut c.vfsmnt,
        &mut c.mnt,
        c.root_dentry,
        c.root_mnt,
    )? {
        // The top of the mount tree without meeting the task's root (a
        // detached mount or a chroot escape): the chain is all there is.
        Up::Root | Up::TopOfTree | Up::FsRoot => {
            c.status = u64::from(dir_status::COMPLETE);
            return Ok(true);
        }
        Up::Crossed => return Ok(false),
        Up::Parent(p) => p,
    };
    if c.len >= DIR_LEN as u64 {
        // Out of room: status stays TRUNCATED.
        return Ok(true);
    }
    let name = read_u64(c.dentry + OFF_DENTRY_NAME.load() + OFF_QSTR_NAME.load())?;
    let Some(dir) = crate::dir_slot(c.slot as u32) else {
        return Err(-1);
    };
    // SAFETY: per-CPU scratch record of this program run.
    let dir = unsafe { &mut *dir };
    // The mask proves off + NAME_LEN <= DIR_BUF to the verifier.
    let off = (c.len as usize) & (DIR_LEN - 1);
    // SAFETY: the helper bounds the copy by the slice and reports faults.
    let got = unsafe {
        bpf_probe_read_kernel_str_bytes(name as *const u8, &mut dir.buf[off..off + NAME_LEN])
    }?;
    c.len = (off + got.len() + 1) as u64;
    c.depth += 1;
    c.dentry = parent;
    Ok(false)
}

/// The dentry of `start`'s first path component below the current task's
/// root (`usr` for `/usr/lib/x`), crossing mount points: what a container
/// path rule's leading component is compared with. None when the walk
/// can't tell (no room, a fault, or the object is the root itself or lies
/// outside the task's root): the caller then lets the record through.
#[inline(always)]
pub fn top_component(start: KPath, root: KPath) -> Option<Top> {
    let mut ctx = TopCtx {
        dentry: start.dentry,
        vfsmnt: start.mnt,
        mnt: start.mnt.wrapping_sub(OFF_MOUNT_MNT.load()),
        root_dentry: root.dentry,
        root_mnt: root.mnt,
        last: 0,
        done: 0,
        crossed_first: 0,
    };
    // SAFETY: helper 181 with a static callback and a pointer to our stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_DIR_STEPS,
            top_step as *mut core::ffi::c_void,
            (&mut ctx as *mut TopCtx).cast(),
            0,
        );
    }
    (ctx.done == 1 && ctx.last != 0).then_some(Top {
        dentry: ctx.last,
        per_directory: ctx.crossed_first == 0 && ctx.last != start.dentry,
    })
}

/// The current task's root (`fs->root`).
#[inline(always)]
pub fn task_root() -> Result<KPath, i32> {
    let fs = read_u64(current_task() + OFF_TASK_FS.load())?;
    read_path(fs + OFF_FS_ROOT.load())
}

/// Where the path walks of a task its container's rules guard (the
/// caller knows) stop, as in `fs_paths`: its container's root.
#[inline(always)]
pub fn guarded_container_root() -> Result<KPath, i32> {
    // SAFETY: helper without preconditions.
    let cg = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
    // SAFETY: value copied out at once.
    match unsafe { CGROUP_ROOTS.get(&cg) } {
        Some(r) => Ok(*r),
        None => task_root(),
    }
}

/// A file's first component below the root (see `top_component`).
pub struct Top {
    pub dentry: u64,
    /// The same for every file of the file's directory in the same mount:
    /// the file is neither the component itself nor a mount's root.
    pub per_directory: bool,
}

/// State of a `top_component` walk, shared with its bpf_loop callback.
#[repr(C)]
struct TopCtx {
    dentry: u64,
    vfsmnt: u64,
    mnt: u64,
    root_dentry: u64,
    root_mnt: u64,
    /// The last dentry left below the root so far.
    last: u64,
    /// 1: reached the task's root; 2: failed.
    done: u64,
    /// 1: the first step crossed a mount (the file is a mount's root).
    crossed_first: u64,
}

#[inline(never)]
extern "C" fn top_step(index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to top_component's TopCtx.
    let c = unsafe { &mut *(ctx as *mut TopCtx) };
    match top_step_in(c, index == 0) {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(_) => {
            c.done = 2;
            1
        }
    }
}

/// The same steps as `step`, but keeping no names: only which dentry was
/// last before the root.
#[inline(always)]
fn top_step_in(c: &mut TopCtx, first: bool) -> Result<bool, i32> {
    match up(
        &mut c.dentry,
        &mut c.vfsmnt,
        &mut c.mnt,
        c.root_dentry,
        c.root_mnt,
    )? {
        Up::Root => {
            c.done = 1;
            Ok(true)
        }
        // Outside the root: no container path to compare.
        Up::TopOfTree | Up::FsRoot => Err(-1),
        Up::Crossed => {
            if first {
                c.crossed_first = 1;
            }
            Ok(false)
        }
        Up::Parent(p) => {
            c.last = c.dentry;
            c.dentry = p;
            Ok(false)
        }
    }
}
