//! The Rego side of policy. An input starting with `{` is an event as
//! `agentguard replay` reads it (one JSON object): its Rego input value
//! must equal its JSON form, and the pack (YAML and Rego, plus a policy
//! applying builtins to the event's strings) judges it. Anything else is
//! the text of a `.rego` policy file, loaded and run on the sample events.
#![no_main]

use agentguard::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        if let Ok(ev) = serde_json::from_slice::<Event>(data) {
            agentguard_fuzz::exercise_event(&ev);
        }
    } else {
        agentguard_fuzz::load_policy_text("fuzz.rego", data);
    }
});
