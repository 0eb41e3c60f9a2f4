//! Userspace half: lets aya maps carry these types and reads records safely.
use crate::event::*;

/// A ring-buffer record type: `#[repr(C)]`, no pointers, and valid for every
/// bit pattern, so it may be copied out of raw bytes.
///
/// # Safety
/// Implement only for types that satisfy the above.
pub unsafe trait Record: Copy {}

// SAFETY (all impls below): repr(C) structs of integers and byte arrays.
unsafe impl Record for Header {}
unsafe impl Record for ProcEvent {}
unsafe impl Record for FileEvent {}
unsafe impl Record for RenameEvent {}
unsafe impl Record for ExecEvent {}
unsafe impl Record for NetEvent {}
unsafe impl Record for DnsEvent {}

// SAFETY: plain-old-data, `#[repr(C)]`, no pointers, every bit pattern valid.
unsafe impl aya::Pod for Header {}
// SAFETY: as above.
unsafe impl aya::Pod for ProcEvent {}
// SAFETY: as above (the pending-record maps' values, whose keys userspace
// counts).
unsafe impl aya::Pod for FileEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for RenameEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for ExecEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for NetEvent {}

// SAFETY: repr(C) integers, no padding (8 + 4 + 4 + 64 bytes).
unsafe impl aya::Pod for crate::filter::FloodState {}

// SAFETY (enforcement map keys and values): `#[repr(C)]` integers and byte
// arrays with explicit padding fields, every bit pattern valid.
mod enforce_pod {
    use crate::enforce::*;
    unsafe impl aya::Pod for PathKey {}
    unsafe impl aya::Pod for PathVerdict {}
    unsafe impl aya::Pod for NetKey {}
    unsafe impl aya::Pod for NetVerdict {}
    unsafe impl aya::Pod for PortRange {}
    unsafe impl aya::Pod for RuleSlot {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for InodeRules {}
    unsafe impl aya::Pod for PipeProg {}
    unsafe impl aya::Pod for Taint {}
    unsafe impl aya::Pod for DnsKey {}
    unsafe impl aya::Pod for DnsAllowKey {}
    unsafe impl aya::Pod for DnsAllow {}
    unsafe impl aya::Pod for DnsSock {}
}

/// Copies a `T` out of a ring-buffer record, or `None` when the record is too
/// short to hold one (a kernel/daemon mismatch, never trusted blindly).
pub fn read_record<T: Record>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked above; `read_unaligned` copes with any alignment;
    // `T: Record` guarantees every bit pattern is a valid `T`.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Like [`read_record`] for records sent without their unused tail: at
/// least `min_len` bytes must be there; missing bytes read as zero.
pub fn read_record_prefix<T: Record>(bytes: &[u8], min_len: usize) -> Option<T> {
    if bytes.len() < min_len {
        return None;
    }
    let mut v = core::mem::MaybeUninit::<T>::zeroed();
    let n = bytes.len().min(core::mem::size_of::<T>());
    // SAFETY: n is within both buffers; zero bytes plus copied bytes make a
    // valid T because `T: Record` accepts every bit pattern.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), n);
        Some(v.assume_init())
    }
}
