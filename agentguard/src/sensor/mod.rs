//! The sensor: loads the eBPF object, attaches the probes, reads the ring
//! buffer and turns raw records into typed [`crate::event::Event`]s.

pub mod btf;
pub mod features;
