//! Request paths: what the upstream receives, and every way an upstream could read it.
//!
//! gatehouse matches rules on a path, but the upstream behind it decides what that path means,
//! and upstreams disagree: one decodes `%2F` into a separator, another treats `\` as `/`, a
//! servlet container drops `;jsessionid=…` path parameters (`/public/..;/admin` is `/admin` to
//! Tomcat), a Windows server ignores trailing dots and case, a proxy decodes twice. The principle
//! is that **when in doubt, the stricter outcome wins**, and it is applied by construction:
//!
//! 1. [`prepare`] refuses what no upstream reads the same way twice — raw bytes that are not URI
//!    characters, malformed escapes, escapes that decode (at any depth) to control bytes or to
//!    bytes that are not UTF-8 (which includes overlong forms such as `%C0%AF`), more than
//!    [`MAX_DECODINGS`] layers of encoding — and, by the setting, encoded slashes.
//! 2. It builds the path the upstream will receive, normalized as configured (the names and the
//!    steps are Istio's `meshConfig.pathNormalization` and Envoy's
//!    `path_with_escaped_slashes_action`).
//! 3. It lists every reading of that path: the closure of the path under the transformations
//!    upstreams are known to make, applied in any order and any number of times (see
//!    [`TRANSFORMS`]). The policy then treats the request as every one of them: public only if
//!    every reading is public, allowed only if the rules of every reading allow it (see
//!    `Policy::route`).
//!
//! Most paths hold nothing any transformation changes: they are taken as they are, with no
//! allocation beyond the path itself.

use std::borrow::Cow;

// FOLD_RUNS and FOLD_TEXT: the compatibility decompositions that matter to rules (build.rs), by
// runs of code points (333 runs of about 2,100 characters: 2.6 KB, where an entry per character
// was 17 KB).
include!(concat!(env!("OUT_DIR"), "/compat_fold.rs"));

/// A character's compatibility decomposition (NFKD), if it is one that can change what a rule
/// matches (see build.rs); `None` for every other character, which stays as it is.
pub(crate) fn compat_fold(c: char) -> Option<&'static str> {
    let cp = c as u32;
    // The last run starting at or before `cp`, if `cp` is in it.
    let i = FOLD_RUNS.partition_point(|&(first, ..)| first <= cp).checked_sub(1)?;
    let &(first, start, len, count) = FOLD_RUNS.get(i)?;
    let k = cp - first;
    if k >= u32::from(count) {
        return None;
    }
    let at = usize::from(start) + k as usize * usize::from(len);
    FOLD_TEXT.get(at..at + usize::from(len))
}

/// How the path is normalized before matching and forwarding (Istio's
/// `meshConfig.pathNormalization.normalization`, same names and the same steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// Forwarded as received.
    None,
    /// RFC 3986 §6.2.2: percent-encoded unreserved characters decoded, other escapes in upper
    /// case, `\` turned into `/`, `.` and `..` segments removed (Envoy's `normalize_path`).
    Base,
    /// `Base`, then repeated slashes merged (Envoy's `merge_slashes`).
    MergeSlashes,
    /// `%2F` and `%5C` decoded first, then `MergeSlashes`.
    DecodeAndMergeSlashes,
}

impl Normalization {
    pub const NAMES: [&'static str; 4] = ["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"];

    pub fn from_name(name: &str) -> Option<Normalization> {
        Some(match name {
            "NONE" => Normalization::None,
            "BASE" => Normalization::Base,
            "MERGE_SLASHES" => Normalization::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => Normalization::DecodeAndMergeSlashes,
            _ => return None,
        })
    }
}

/// What to do with `%2F`, `%5C` (either case, at any depth of encoding): Envoy's
/// `path_with_escaped_slashes_action`, same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Forwarded as they are; the path still has to mean the same with them decoded.
    KeepUnchanged,
    /// 400.
    RejectRequest,
    /// Decoded (one layer) into `/` and `\` before normalization, and forwarded so.
    UnescapeAndForward,
}

impl EscapedSlashes {
    pub const NAMES: [&'static str; 3] = ["KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_FORWARD"];

    pub fn from_name(name: &str) -> Option<EscapedSlashes> {
        Some(match name {
            "KEEP_UNCHANGED" => EscapedSlashes::KeepUnchanged,
            "REJECT_REQUEST" => EscapedSlashes::RejectRequest,
            "UNESCAPE_AND_FORWARD" => EscapedSlashes::UnescapeAndForward,
            _ => return None,
        })
    }
}

/// The path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSettings {
    pub normalization: Normalization,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathSettings {
    /// Slashes merged, encoded slashes refused: the stricter choice of each.
    fn default() -> Self {
        PathSettings { normalization: Normalization::MergeSlashes, escaped_slashes: EscapedSlashes::RejectRequest }
    }
}

/// Why a request target is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// No `:path`, or one that does not start with `/` (`*`, an absolute URL).
    NotAbsolute,
    /// Longer than [`MAX_PATH`].
    TooLong,
    /// A raw byte that is not a URI character: control, space, DEL, non-ASCII, or `#`.
    InvalidCharacter,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// An escape that decodes, at some depth, to a control character (NUL, CR, LF, C1 …).
    EncodedControl,
    /// An escape that decodes, at some depth, to bytes that are not UTF-8 (overlong forms too).
    NotUtf8,
    /// `%2F` or `%5C`, with `escapedSlashes: REJECT_REQUEST`.
    EscapedSlash,
    /// More than [`MAX_DECODINGS`] layers of percent-encoding.
    TooManyEncodings,
    /// More readings than [`MAX_READINGS`].
    TooAmbiguous,
}

impl PathError {
    /// The reason code in the 400 body.
    pub fn code(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::TooLong => "path_too_long",
            PathError::InvalidCharacter => "invalid_character",
            PathError::BadEscape => "bad_escape",
            PathError::EncodedControl => "encoded_control",
            PathError::NotUtf8 => "not_utf8",
            PathError::EscapedSlash => "escaped_slash",
            PathError::TooManyEncodings => "too_many_encodings",
            PathError::TooAmbiguous => "ambiguous_path",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request target must be a path starting with /",
            PathError::TooLong => "the path is too long",
            PathError::InvalidCharacter => "the request target holds a character that is not allowed in a URI",
            PathError::BadEscape => "the path holds a % that does not start an escape",
            PathError::EncodedControl => "the path encodes a control character",
            PathError::NotUtf8 => "the path encodes bytes that are not UTF-8",
            PathError::EscapedSlash => "the path holds an encoded / or \\",
            PathError::TooManyEncodings => "the path is encoded too many times",
            PathError::TooAmbiguous => "servers could read this path in too many ways",
        }
    }
}

/// Longest path (without query) gatehouse reads; most servers stop at 8 KB too.
pub const MAX_PATH: usize = 8192;
/// Layers of percent-encoding looked through (`%25252F` is three).
pub const MAX_DECODINGS: usize = 3;
/// Readings checked per path; a path with more is refused.
pub const MAX_READINGS: usize = 256;

/// A request path made ready for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// The path the upstream receives (without the query).
    pub path: String,
    /// The whole `:path` to forward when normalization changed it (the query kept as sent).
    pub rewritten: Option<String>,
    /// Every reading of `path` an upstream could make, `path` first; empty when `path` is the
    /// only one.
    others: Vec<String>,
}

impl RequestPath {
    /// Every reading of the path, the path itself first.
    pub fn readings(&self) -> impl Iterator<Item = &str> + Clone {
        std::iter::once(self.path.as_str()).chain(self.others.iter().skip(1).map(String::as_str))
    }
}

/// Checks a request's `:path`, normalizes it and lists its readings.
pub fn prepare(raw: &str, settings: &PathSettings) -> Result<RequestPath, PathError> {
    let (path, query) = match raw.find('?') {
        Some(i) => raw.split_at(i),
        None => (raw, ""),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if !raw.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'#') {
        return Err(PathError::InvalidCharacter);
    }
    if is_plain(path) {
        return Ok(RequestPath { path: path.to_string(), rewritten: None, others: Vec::new() });
    }
    check_encodings(path, settings.escaped_slashes == EscapedSlashes::RejectRequest)?;
    let forwarded = forwarded_path(path, settings);
    let rewritten = (forwarded != path).then(|| format!("{forwarded}{query}"));
    let others = if is_plain(&forwarded) { Vec::new() } else { readings_of(&forwarded)? };
    Ok(RequestPath { path: forwarded, rewritten, others })
}

/// A path no transformation changes: lower-case letters, digits and the characters that no
/// server treats specially in a path; no `//`, and no segment ending in `.` (which covers `.`,
/// `..` and the trailing dots Windows ignores).
fn is_plain(path: &str) -> bool {
    // One pass, by a table: this runs on every request.
    // Indexing in a const fn is checked when the table is built, at compile time.
    #[allow(clippy::indexing_slicing)]
    const fn plain_bytes() -> [bool; 256] {
        let mut t = [false; 256];
        let mut c = b'a';
        while c <= b'z' {
            t[c as usize] = true;
            c += 1;
        }
        let mut d = b'0';
        while d <= b'9' {
            t[d as usize] = true;
            d += 1;
        }
        let others = b"/-._~!$&'()*+,=:@";
        let mut i = 0;
        while i < others.len() {
            t[others[i] as usize] = true;
            i += 1;
        }
        t
    }
    static PLAIN: [bool; 256] = plain_bytes();
    let mut prev = 0u8;
    for &c in path.as_bytes() {
        let pair_ok = !matches!((prev, c), (b'/', b'/') | (b'.', b'/') | (b':', b':'));
        if !PLAIN.get(usize::from(c)).copied().unwrap_or(false) || !pair_ok {
            return false;
        }
        prev = c;
    }
    prev != b'.'
}

/// Looks through every layer of encoding: each must decode to UTF-8 without control
/// characters, and there may be at most [`MAX_DECODINGS`] of them.
fn check_encodings(path: &str, reject_slashes: bool) -> Result<(), PathError> {
    if has_bad_escape(path) {
        return Err(PathError::BadEscape);
    }
    let mut layer = Cow::Borrowed(path);
    for depth in 0..=MAX_DECODINGS {
        let Some(next) = decode_once(&layer)? else {
            return Ok(());
        };
        if depth == MAX_DECODINGS {
            return Err(PathError::TooManyEncodings);
        }
        if reject_slashes && separators(&next) > separators(&layer) {
            return Err(PathError::EscapedSlash);
        }
        layer = Cow::Owned(next);
    }
    Ok(())
}

fn separators(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/' || b == b'\\').count()
}

fn has_bad_escape(path: &str) -> bool {
    let b = path.as_bytes();
    b.iter().enumerate().any(|(i, &c)| c == b'%' && hex_at(b, i + 1).is_none())
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The byte of the two hex digits at `i`.
fn hex_at(b: &[u8], i: usize) -> Option<u8> {
    Some(hex_digit(*b.get(i)?)? << 4 | hex_digit(*b.get(i + 1)?)?)
}

/// The code point of IIS's `%uHHHH` at `i` (the `%`).
fn iis_escape_at(b: &[u8], i: usize) -> Option<char> {
    if !matches!(b.get(i + 1), Some(b'u' | b'U')) {
        return None;
    }
    let hi = hex_at(b, i + 2)?;
    let lo = hex_at(b, i + 4)?;
    char::from_u32(u32::from(hi) << 8 | u32::from(lo))
}

/// Decodes every escape once — `%HH`, and IIS's `%uHHHH` — leaving malformed ones as they are.
/// `None` if there is nothing to decode; an error if the result is not UTF-8 or holds a control
/// character.
fn decode_once(s: &str) -> Result<Option<String>, PathError> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Ok(None);
    }
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut decoded = false;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if let Some(v) = hex_at(b, i + 1) {
                out.push(v);
                i += 3;
                decoded = true;
                continue;
            }
            if let Some(ch) = iis_escape_at(b, i) {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += 6;
                decoded = true;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    if !decoded {
        return Ok(None);
    }
    let text = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(PathError::EncodedControl);
    }
    Ok(Some(text))
}

/// The path the upstream receives.
fn forwarded_path(path: &str, s: &PathSettings) -> String {
    let unescape = s.escaped_slashes == EscapedSlashes::UnescapeAndForward
        || s.normalization == Normalization::DecodeAndMergeSlashes;
    let path: Cow<'_, str> = if unescape { Cow::Owned(unescape_slashes(path)) } else { Cow::Borrowed(path) };
    match s.normalization {
        Normalization::None => path.into_owned(),
        Normalization::Base => base(&path),
        Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes => merge_slashes(&base(&path)),
    }
}

/// `%2F` and `%5C`, either case, decoded; nothing else.
fn unescape_slashes(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match (c, hex_at(b, i + 1)) {
            (b'%', Some(v @ (b'/' | b'\\'))) => {
                out.push(char::from(v));
                i += 3;
            }
            _ => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    out
}

/// Envoy's `normalize_path`: RFC 3986 §6.2.2 (unreserved characters decoded, hex in upper
/// case), `\` as `/`, then §5.2.4 (dot segments removed).
fn base(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match (c, hex_at(b, i + 1)) {
            (b'%', Some(v)) => {
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    out.push(char::from(v));
                } else {
                    out.push_str(&format!("%{v:02X}"));
                }
                i += 3;
            }
            (b'\\', _) => {
                out.push('/');
                i += 1;
            }
            _ => {
                // Raw bytes are ASCII here (checked by `prepare`).
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    remove_dot_segments(&out)
}

/// RFC 3986 §5.2.4 on an absolute path: `.` segments dropped, `..` drops the segment before it
/// (never above the root); empty segments are kept.
pub(crate) fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => trailing = last,
            ".." => {
                out.pop();
                trailing = last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if result.is_empty() || (trailing && !out.is_empty()) {
        result.push('/');
    }
    result
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// A way some upstream reads a path. `Ok(None)`: it changes nothing.
type Transform = fn(&str) -> Result<Option<String>, PathError>;

/// What upstreams are known to do to a path before routing it, each as one step:
/// - `decode`: percent-decoding (once; applied again, double decoding), IIS's `%uHHHH` too;
/// - `backslash`: `\` as `/` (Windows, Envoy's `normalize_path`, many frameworks);
/// - `parameters`: `;…` path parameters dropped from each segment (servlet containers,
///   Spring, Jetty: `/a;x/b` is `/a/b`, `/..;/` is `/../`);
/// - `merge`: repeated slashes merged (nginx, Envoy's `merge_slashes`, most routers);
/// - `dots`: `.` and `..` segments resolved (RFC 3986 §5.2.4);
/// - `windows`: trailing dots and spaces and NTFS `::$DATA` dropped from segments (IIS);
/// - `cut`: a decoded `?` or `#` taken as the end of the path (servers that decode first,
///   then parse);
/// - `lower`: case ignored, ASCII and the non-ASCII letters that case-map to ASCII (`K`
///   Kelvin sign, dotless `ı`, `ſ`, as Java's `equalsIgnoreCase` and .NET's ordinal ignore-case
///   compare them);
/// - `compatibility`: Unicode compatibility decomposition (`／` is `/`, `．` is `.`, `ａ` is
///   `a`, `ﬁ` is `fi`). NFKD rather than the NFKC servers apply: it keeps every ASCII character
///   NFKC would give, and more (`é` as `e` and a combining mark), so it can only add readings;
///   invisible characters (zero-width space, soft hyphen, BOM) dropped. Only the characters
///   whose decomposition can change what an ASCII rule matches are decomposed (build.rs);
///   the others stay as they are, which no rule can tell apart from their decomposition.
pub const TRANSFORMS: [(&str, Transform); 9] = [
    ("decode", decode_once),
    ("backslash", backslash),
    ("parameters", drop_parameters),
    ("merge", |s| Ok(changed(s, merge_slashes(s)))),
    ("dots", |s| Ok(changed(s, remove_dot_segments(s)))),
    ("windows", windows),
    ("cut", cut),
    ("lower", lower),
    ("compatibility", compatibility),
];

fn changed(before: &str, after: String) -> Option<String> {
    (after != before).then_some(after)
}

fn backslash(s: &str) -> Result<Option<String>, PathError> {
    Ok(s.contains('\\').then(|| s.replace('\\', "/")))
}

fn drop_parameters(s: &str) -> Result<Option<String>, PathError> {
    if !s.contains(';') {
        return Ok(None);
    }
    let kept: Vec<&str> = s.split('/').map(|seg| seg.split(';').next().unwrap_or_default()).collect();
    Ok(Some(kept.join("/")))
}

fn windows(s: &str) -> Result<Option<String>, PathError> {
    let strip = |seg: &str| -> String {
        if seg == "." || seg == ".." {
            return seg.to_string();
        }
        let mut seg = seg;
        if let Some(i) = seg.to_ascii_lowercase().find("::$data") {
            seg = seg.get(..i).unwrap_or(seg);
        }
        seg.trim_end_matches(['.', ' ']).to_string()
    };
    let out: Vec<String> = s.split('/').map(strip).collect();
    Ok(changed(s, out.join("/")))
}

fn cut(s: &str) -> Result<Option<String>, PathError> {
    Ok(s.find(['?', '#']).map(|i| s.get(..i).unwrap_or_default().to_string()))
}

/// The non-ASCII characters whose lower- or upper-case form starts with an ASCII letter (`İ`
/// lower-cases to `i` + a combining dot, Kelvin's `K` to `k`, `ſ` upper-cases to `S`, `ﬁ` to
/// `FI`), each with that letter in lower case: what [`lower`] folds them to, as servers that
/// compare paths case-insensitively may. Written out, not asked of `char::to_lowercase` and
/// `to_uppercase`: their case tables were 25 KB of the module, for these 18 characters. The
/// test `the_ascii_case_folds_are_all_that_std_knows` checks the list against std's tables.
pub(crate) const ASCII_CASE_FOLDS: [(char, char); 18] = [
    ('\u{DF}', 's'),
    ('\u{130}', 'i'),
    ('\u{131}', 'i'),
    ('\u{17F}', 's'),
    ('\u{1F0}', 'j'),
    ('\u{1E96}', 'h'),
    ('\u{1E97}', 't'),
    ('\u{1E98}', 'w'),
    ('\u{1E99}', 'y'),
    ('\u{1E9A}', 'a'),
    ('\u{212A}', 'k'),
    ('\u{FB00}', 'f'),
    ('\u{FB01}', 'f'),
    ('\u{FB02}', 'f'),
    ('\u{FB03}', 'f'),
    ('\u{FB04}', 'f'),
    ('\u{FB05}', 's'),
    ('\u{FB06}', 's'),
];

fn lower(s: &str) -> Result<Option<String>, PathError> {
    let fold = |c: char| -> char {
        if c.is_ascii() {
            return c.to_ascii_lowercase();
        }
        ASCII_CASE_FOLDS.iter().find(|(from, _)| *from == c).map_or(c, |(_, to)| *to)
    };
    Ok(changed(s, s.chars().map(fold).collect()))
}

fn compatibility(s: &str) -> Result<Option<String>, PathError> {
    if s.is_ascii() {
        return Ok(None);
    }
    // Characters that render as nothing (zero-width spaces and joiners, the soft hyphen, the
    // BOM): some servers drop them.
    let invisible = |c: &char| matches!(c, '\u{AD}' | '\u{34F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}');
    let mut folded = String::with_capacity(s.len());
    for c in s.chars() {
        match compat_fold(c) {
            Some(d) => folded.extend(d.chars().filter(|c| !invisible(c))),
            None if !invisible(&c) => folded.push(c),
            None => {}
        }
    }
    if folded.chars().any(char::is_control) {
        return Err(PathError::EncodedControl);
    }
    Ok(changed(s, folded))
}

/// The closure of `path` under [`TRANSFORMS`]: every string some sequence of them makes of it,
/// `path` first.
fn readings_of(path: &str) -> Result<Vec<String>, PathError> {
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut all = vec![path.to_string()];
    seen.insert(path.to_string());
    let mut i = 0;
    while let Some(current) = all.get(i).cloned() {
        i += 1;
        for (_, transform) in TRANSFORMS {
            let Some(next) = transform(&current)? else {
                continue;
            };
            if seen.contains(&next) {
                continue;
            }
            if all.len() >= MAX_READINGS {
                return Err(PathError::TooAmbiguous);
            }
            seen.insert(next.clone());
            all.push(next);
        }
    }
    Ok(all)
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
