//! A ring-buffer record, as the daemon reads it from the kernel: decoded
//! (an error, never a panic, for a record that doesn't fit), then the
//! decoded event through what follows (JSON line, Rego input, the pack).
#![no_main]

use agentguard::sensor::decode::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(ev) => agentguard_fuzz::exercise_event(&ev),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
