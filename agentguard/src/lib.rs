//! agentguard: runtime policy enforcement and detection for AI-agent workloads.
//!
//! The data's path, one module per stage:
//! `sensor` (load, attach, read) -> identity -> policy -> enforcement -> outputs.
//! `event` holds the typed event that flows between the stages; `alert` the
//! decision and action types that pass from policy to enforcement to outputs.

pub mod alert;
pub mod alloc;
pub mod config;
pub mod daemon;
pub mod enforcement;
pub mod event;
pub mod identity;
pub mod learn;
pub mod notify;
pub mod outputs;
pub mod policy;
pub mod sensor;
pub mod status;
pub mod trust;
