//! Training and evaluation data files (CSV, TSV, JSON Lines): `sbert_tui::fuzzing::data_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sbert_tui::fuzzing::data_file(data));
