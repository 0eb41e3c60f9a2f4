//! Outputs: where events and alerts leave the daemon. Every sink sits behind
//! a bounded queue drained by its own thread, so a slow reader can never
//! stall the event path: when the queue is full the record is dropped and
//! counted instead.

pub mod jsonl;
