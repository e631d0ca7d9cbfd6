//! Sentence files (plain lines, JSON Lines): `sbert_tui::fuzzing::sentence_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sbert_tui::fuzzing::sentence_file(data));
