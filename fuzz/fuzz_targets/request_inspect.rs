//! Request inspection: any body must never panic, and the strict reader's pass must give the
//! facts (model, stream, usage options, user, and the spans the rewrite splices) that
//! serde_json's derive gives, wherever it takes the body; where it declines, `inspect` reads
//! with serde_json, so the two must agree on every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokentap::proxy::request::{inspect, inspect_with_serde};

fuzz_target!(|body: &[u8]| {
    assert_eq!(inspect(body), inspect_with_serde(body));
});
