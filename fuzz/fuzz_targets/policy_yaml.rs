//! A YAML policy file as the daemon and `policy lint` load it: written to
//! a directory of its own and loaded with `PolicySet::load_dir_with`; a set
//! that loads is planned, turned into kernel map entries and evaluated,
//! the diagnostics of one that doesn't are formatted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agentguard_fuzz::load_policy_text("fuzz.yaml", data);
});
