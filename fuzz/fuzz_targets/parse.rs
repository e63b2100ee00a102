//! Any bytes: the parser must return a parse or an error, never panic or
//! hang, and whatever parses must dump and validate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(dockerfile) = kiln_dockerfile::parse_bytes(data) {
        let _ = kiln_dockerfile::dump(&dockerfile);
        let _ = kiln_dockerfile::validate(&dockerfile);
    }
    let _ = kiln_dockerfile::detect_syntax(&String::from_utf8_lossy(data));
});
