//! Rebuilds the crate when a locale file changes: `rust_i18n::i18n!` (src/lib.rs) reads
//! `locales/` at compile time without telling Cargo.

fn main() {
    println!("cargo:rerun-if-changed=locales");
}
