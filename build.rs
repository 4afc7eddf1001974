//! Generates the compatibility-fold table of `src/policy/path.rs` (`$OUT_DIR/compat_fold.rs`).
//!
//! The path policy reads a non-ASCII path as Unicode compatibility decomposition (NFKD) would
//! leave it, because some upstreams normalize before they route. Rules only ever hold ASCII, so
//! the only characters whose decomposition can change what a rule matches are those that
//! decompose into something containing an ASCII character, a character the `lower` reading
//! folds to ASCII (`𝚤` → `ı` → `i`), an invisible character or a control. The table holds
//! exactly those (about 2,100 of them), taken from `unicode-normalization` here at build
//! time; linking the crate itself would put all of its tables (~100 KB, a tenth of the module)
//! into the module for a reading that is only needed on non-ASCII paths. A host test checks the
//! table against the crate for every code point.

use std::fmt::Write as _;
use unicode_normalization::UnicodeNormalization;

/// Keep in step with `lower` and `compatibility` in `src/policy/path.rs`.
fn lowers_to_ascii(c: char) -> bool {
    c.is_ascii()
        || c.to_lowercase().next().is_some_and(|l| l.is_ascii())
        || c.to_uppercase().next().is_some_and(|u| u.is_ascii())
}

fn invisible(c: char) -> bool {
    matches!(c, '\u{AD}' | '\u{34F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Runs of consecutive code points whose decompositions have the same length (the
    // mathematical letters and digits come in runs of 26 and 10): (first, start, length, count).
    let mut runs: Vec<(u32, usize, usize, usize)> = Vec::new();
    let mut text = String::new();
    for c in (0x80u32..=0x10FFFF).filter_map(char::from_u32) {
        let d: String = std::iter::once(c).nfkd().collect();
        if d.chars().eq(std::iter::once(c)) {
            continue;
        }
        if !d.chars().any(|x| lowers_to_ascii(x) || invisible(x) || x.is_control()) {
            continue;
        }
        let start = text.len();
        text.push_str(&d);
        match runs.last_mut() {
            Some((first, _, len, count)) if *first + *count as u32 == c as u32 && *len == d.len() && *count < 255 => {
                *count += 1;
            }
            _ => runs.push((c as u32, start, d.len(), 1)),
        }
    }
    if text.len() > usize::from(u16::MAX) {
        println!("cargo:warning=compatibility text too long for u16 offsets: {}", text.len());
        std::process::exit(1);
    }
    let mut index = String::new();
    for (first, start, len, count) in &runs {
        let _ = write!(index, "({first}, {start}, {len}, {count}),");
    }
    let count = runs.len();
    let out = format!(
        "/// Runs of code points: the first, the start in [`FOLD_TEXT`] of its decomposition, the\n\
         /// length of each decomposition in the run and how many code points follow on, by code point.\n\
         pub(crate) static FOLD_RUNS: [(u32, u16, u8, u8); {count}] = [{index}];\n\
         /// The decompositions, one after another.\n\
         pub(crate) static FOLD_TEXT: &str = {text:?};\n"
    );
    let dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    if let Err(e) = std::fs::write(std::path::Path::new(&dir).join("compat_fold.rs"), out) {
        println!("cargo:warning=cannot write compat_fold.rs: {e}");
        std::process::exit(1);
    }
}
