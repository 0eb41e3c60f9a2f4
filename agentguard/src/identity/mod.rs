//! Identity: which container, pod and agent an event came from.
//!
//! So far: container ids from cgroup paths, container metadata from Docker,
//! process facts and ancestry from /proc. Tagging every event (the resolver,
//! agent detection by ancestry, containerd and the kernel filter feed) comes
//! with the rest of the identity issue.

pub mod cgroup;
pub mod docker;
pub mod procfs;
pub mod resolver;
pub mod snapshot;
pub mod watch;
