//! Types shared by the eBPF programs and the userspace daemon.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers, so the kernel
//! side can fill it in place and userspace can read it back byte for byte.
//! The `user` feature adds the userspace half (aya `Pod` impls, decoding).
#![no_std]

pub mod enforce;
pub mod event;
pub mod filter;

#[cfg(feature = "user")]
pub mod user;

pub use event::*;
