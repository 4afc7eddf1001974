use super::*;
use crate::policy::{Policy, Target};
use crate::testutil::upstreams::{allowed, identities, MODELS};

const fn settings(normalization: Normalization, escaped_slashes: EscapedSlashes) -> PathSettings {
    PathSettings { normalization, escaped_slashes }
}

const DEFAULT: PathSettings = settings(Normalization::MergeSlashes, EscapedSlashes::RejectRequest);
const KEEP: EscapedSlashes = EscapedSlashes::KeepUnchanged;

/// Every setting a user can choose.
const ALL_SETTINGS: [PathSettings; 10] = [
    settings(Normalization::None, KEEP),
    settings(Normalization::None, EscapedSlashes::RejectRequest),
    settings(Normalization::None, EscapedSlashes::UnescapeAndForward),
    settings(Normalization::Base, KEEP),
    settings(Normalization::Base, EscapedSlashes::RejectRequest),
    settings(Normalization::Base, EscapedSlashes::UnescapeAndForward),
    settings(Normalization::MergeSlashes, KEEP),
    DEFAULT,
    settings(Normalization::MergeSlashes, EscapedSlashes::UnescapeAndForward),
    settings(Normalization::DecodeAndMergeSlashes, EscapedSlashes::UnescapeAndForward),
];

fn forwarded(raw: &str, s: &PathSettings) -> Result<String, PathError> {
    prepare(raw, s).map(|p| p.rewritten.unwrap_or_else(|| raw.to_string()))
}

#[test]
fn plain_paths_are_taken_as_they_are() {
    for raw in
        ["/", "/echo", "/a/b/c.txt", "/api/v1/items/42?x=1&y=%2F", "/~user/file-name_1.tar.gz", "/a:b@c!$&'()*+,="]
    {
        for s in ALL_SETTINGS {
            let p = prepare(raw, &s).unwrap();
            assert_eq!(p.rewritten, None, "{raw}");
            assert_eq!(p.readings().count(), 1, "{raw}");
        }
    }
}

#[test]
fn targets_no_server_reads_one_way_are_refused() {
    use PathError::*;
    let long = format!("/{}", "a".repeat(MAX_PATH));
    let cases: &[(&str, PathError)] = &[
        ("", NotAbsolute),
        ("*", NotAbsolute),
        ("http://other.example/admin/", NotAbsolute),
        ("admin/", NotAbsolute),
        (&long, TooLong),
        ("/a b", InvalidCharacter),
        ("/a\tb", InvalidCharacter),
        ("/a\u{7f}", InvalidCharacter),
        ("/caf\u{e9}", InvalidCharacter),
        ("/admin#frag", InvalidCharacter),
        ("/echo?q=a b", InvalidCharacter),
        ("/a%", BadEscape),
        ("/a%2", BadEscape),
        ("/a%zz", BadEscape),
        ("/a%u002f", BadEscape),
        ("/admin%00.css", EncodedControl),
        ("/admin%0d%0aSet-Cookie:x", EncodedControl),
        ("/admin%2500", EncodedControl),
        ("/a%c2%85", EncodedControl),
        ("/a%ff", NotUtf8),
        ("/a%c0%af", NotUtf8),
        ("/a%c0%ae%c0%ae/", NotUtf8),
        ("/a%e0%80%af", NotUtf8),
        ("/a%ed%a0%80", NotUtf8),
        ("/a%25ff", NotUtf8),
        ("/public/..%2fadmin", EscapedSlash),
        ("/public/..%2Fadmin", EscapedSlash),
        ("/public/..%5cadmin", EscapedSlash),
        ("/public/..%5Cadmin", EscapedSlash),
        ("/public/..%252fadmin", EscapedSlash),
        ("/public/..%25252Fadmin", EscapedSlash),
        ("/a%2525252e", TooManyEncodings),
    ];
    for (raw, want) in cases {
        assert_eq!(prepare(raw, &DEFAULT).err(), Some(*want), "{raw:?}");
    }
    // Under every setting, what is not about slashes is refused the same way.
    for (raw, want) in cases.iter().filter(|(_, e)| *e != EscapedSlash) {
        for s in ALL_SETTINGS {
            assert_eq!(prepare(raw, &s).err(), Some(*want), "{raw:?} {s:?}");
        }
    }
    // `%25` that decodes into nothing special is a percent sign.
    assert!(prepare("/search/100%25", &DEFAULT).is_ok());
    assert!(prepare("/files/50%25off", &DEFAULT).is_ok());
}

#[test]
fn what_the_upstream_receives() {
    use EscapedSlashes::*;
    use Normalization::*;
    let none = settings(None, KeepUnchanged);
    let base = settings(Base, KeepUnchanged);
    let merge = settings(MergeSlashes, KeepUnchanged);
    let decode = settings(DecodeAndMergeSlashes, UnescapeAndForward);
    let unescape = settings(None, UnescapeAndForward);
    let cases: &[(&str, PathSettings, &str)] = &[
        // NONE: as received.
        ("/a/../b//c%2Fd\\e;x", none, "/a/../b//c%2Fd\\e;x"),
        ("/%61dmin/", none, "/%61dmin/"),
        // BASE: RFC 3986, `\` as `/`, other escapes kept (hex upper-cased).
        ("/public/../admin/", base, "/admin/"),
        ("/%61dmin/%7e/%2e%2E/x", base, "/admin/x"),
        ("/a\\..\\b", base, "/b"),
        ("/a//b", base, "/a//b"),
        ("/a/%2fb", base, "/a/%2Fb"),
        ("/caf%c3%a9?q=%2f", base, "/caf%C3%A9?q=%2f"),
        ("/a/b/..", base, "/a/"),
        ("/a/b/.", base, "/a/b/"),
        ("/../../x", base, "/x"),
        ("/a;x/b", base, "/a;x/b"),
        // MERGE_SLASHES: and slashes merged (the default, with REJECT_REQUEST).
        ("//admin//x", merge, "/admin/x"),
        ("/a\\\\b", merge, "/a/b"),
        ("//admin//x?y=1", DEFAULT, "/admin/x?y=1"),
        ("/a/%2fb", merge, "/a/%2Fb"),
        // DECODE_AND_MERGE_SLASHES: `%2F` and `%5C` decoded first.
        ("/a/%2fb", decode, "/a/b"),
        ("/public/..%2Fadmin", decode, "/admin"),
        ("/public/..%5Cadmin", decode, "/admin"),
        ("/a%252fb", decode, "/a%252fb"),
        // UNESCAPE_AND_FORWARD without normalization: only the slashes change.
        ("/a/%2f%5Cb/../c", unescape, "/a//\\b/../c"),
    ];
    for (raw, s, want) in cases {
        assert_eq!(forwarded(raw, s).as_deref(), Ok(*want), "{raw:?} {s:?}");
    }
}

#[test]
fn readings_cover_what_servers_do() {
    let readings = |raw: &str, s: &PathSettings| -> Vec<String> {
        prepare(raw, s).unwrap().readings().map(String::from).collect()
    };
    let none = settings(Normalization::None, KEEP);
    let has = |raw: &str, s: &PathSettings, want: &str| {
        let r = readings(raw, s);
        assert!(r.iter().any(|x| x == want), "{raw:?} should read as {want:?}: {r:?}");
    };
    has("/public/..;/admin/", &DEFAULT, "/admin/"); // Tomcat
    has("/public;x/../admin", &none, "/admin"); // Spring
    has("/admin;jsessionid=1/", &DEFAULT, "/admin/");
    has("/public/%2e%2e/admin", &none, "/admin"); // decoding before dot removal
    has("/public/..%2fadmin", &settings(Normalization::MergeSlashes, KEEP), "/admin"); // decoded slash
    has("/public/..%252fadmin", &settings(Normalization::MergeSlashes, KEEP), "/admin"); // double decoding
    has("/public\\..\\admin", &none, "/admin"); // backslash
    has("//admin/", &settings(Normalization::Base, KEEP), "/admin/"); // merged slashes
    has("/admin./", &DEFAULT, "/admin/"); // Windows trailing dot
    has("/admin%20/", &DEFAULT, "/admin/"); // Windows trailing space
    has("/admin::$DATA", &DEFAULT, "/admin"); // NTFS stream
    has("/Admin/", &DEFAULT, "/admin/"); // case
    has("/adm%C4%B1n/", &DEFAULT, "/admin/"); // dotless ı, upper-cased by Java to I
    has("/%E2%84%AAey", &DEFAULT, "/key"); // Kelvin sign
    has("/%EF%BC%8Fadmin", &DEFAULT, "//admin"); // fullwidth solidus
    has("/public%EF%BC%8F%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin", &DEFAULT, "/admin"); // fullwidth ../
    has("/%EF%BD%81dmin/", &DEFAULT, "/admin/"); // fullwidth a
    has("/admin%E2%80%8B/", &DEFAULT, "/admin/"); // zero-width space
    has("/ad%C2%ADmin/", &DEFAULT, "/admin/"); // soft hyphen
    has("/admin%C2%A0/", &DEFAULT, "/admin/"); // no-break space: NFKD space, then Windows
    has("/admin%3F.css", &DEFAULT, "/admin"); // decoded ? ends the path
    has("/admin%23x", &DEFAULT, "/admin");
    has("/public/..%25%32%66admin", &settings(Normalization::MergeSlashes, KEEP), "/admin");
    // %25 %32 %66 is %2f
}

/// The policies of the property test, over the prefixes the alphabet below can spell.
fn policies() -> Vec<(&'static str, Policy)> {
    crate::testutil::upstreams::policies("/a/", "/d/")
}

/// The tricky parts, as tokens, so that short sequences reach the interesting paths.
const TOKENS: [&str; 18] = [
    "/",
    "a",
    "d",
    "D",
    ".",
    "..",
    "%2e",
    "%2f",
    "%5C",
    "\\",
    ";x",
    "%252f",
    "%61",
    "%3f",
    "%20",
    "%C4%B1",
    "%EF%BC%8F",
    "%25",
];

fn paths_up_to(len: usize) -> Vec<String> {
    let mut all = vec![String::from("/")];
    let mut frontier = vec![String::from("/")];
    for _ in 0..len {
        frontier = frontier.iter().flat_map(|p| TOKENS.iter().map(move |t| format!("{p}{t}"))).collect();
        all.extend(frontier.iter().cloned());
    }
    all
}

/// The property of issue 11: for every path over the alphabet, every setting and every policy,
/// whoever gatehouse lets through, every upstream model would let through on its own reading of
/// the forwarded path. gatehouse may be stricter (refuse, or send to login), never more
/// permissive.
#[test]
fn the_verdict_is_never_more_permissive_than_any_upstream_reading() {
    let policies = policies();
    let mut checked = 0usize;
    let mut refused = 0usize;
    let mut check = |raw: &str, s: &PathSettings| {
        let prepared = prepare(raw, s);
        for (pname, policy) in &policies {
            let Ok(p) = &prepared else {
                refused += 1;
                continue;
            };
            let routes = policy.route(&["h"], p.readings(), &["GET"]);
            for (mname, model) in MODELS {
                let Some(reading) = model(&p.path) else {
                    continue;
                };
                let theirs = policy.route_of(&Target { host: "h", path: &reading, method: "GET" });
                for (who, claims) in identities() {
                    if routes.iter().all(|&r| allowed(policy, r, &claims)) {
                        assert!(
                            allowed(policy, theirs, &claims),
                            "{who} let through on {raw:?} ({s:?}, policy {pname}): forwarded {:?}, which {mname} reads as {reading:?} ({theirs:?}, gatehouse saw {routes:?})",
                            p.path
                        );
                    }
                }
                checked += 1;
            }
        }
    };
    for raw in paths_up_to(3) {
        for s in ALL_SETTINGS {
            check(&raw, &s);
        }
    }
    for raw in paths_up_to(4) {
        check(&raw, &DEFAULT);
    }
    assert!(checked > 1_000_000, "{checked} checks");
    assert!(refused > 0);
}

/// The other side of strictness: what ordinary applications send is not refused, and reads
/// one way only.
#[test]
fn ordinary_paths_pass() {
    let (_, demo) = policies().remove(0);
    for raw in [
        "/",
        "/a/",
        "/a/index.html",
        "/d/",
        "/d/users/42",
        "/api/v1/Users/ABC",
        "/files/report%20final.pdf",
        "/search/caf%C3%A9",
        "/wiki/M%C3%BCnchen",
        "/static/app.3f2a1b.js",
        "/x;jsessionid=abc",
        "/a/b;v=1/c",
        "/emoji/%F0%9F%98%80",
        "/q?redirect=%2Fd%2F&next=..%2F..",
        "/a/%7Euser",
        "/search/100%25",
    ] {
        let p = prepare(raw, &DEFAULT).unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"));
        assert!(
            !demo.route(&["h"], p.readings(), &["GET"]).is_ambiguous(),
            "{raw:?} ambiguous: {:?}",
            p.readings().collect::<Vec<_>>()
        );
    }
}

#[test]
fn readings_are_bounded() {
    // A path built to have many readings is refused, not explored without end.
    let raw = format!("/{}", "A%2e;x/%252E%2E\\..%20/".repeat(12));
    assert!(matches!(prepare(&raw, &settings(Normalization::None, KEEP)), Err(PathError::TooAmbiguous) | Ok(_)));
    let many = "/Ab;c/%2e%2E/d.%20/%C4%B1\\x//".repeat(4);
    match prepare(&many, &settings(Normalization::None, KEEP)) {
        Ok(p) => assert!(p.readings().count() <= MAX_READINGS),
        Err(e) => assert_eq!(e, PathError::TooAmbiguous),
    }
}

/// Where `prepare` takes its shortcut, the full work would change nothing: the path is
/// forwarded as it is and has no other reading.
#[test]
fn the_fast_path_agrees_with_the_full_work() {
    let alphabet = ["/", "a", "Z", ".", "..", ":", "::", "$", ";", "%2e", "\\", "~", "-", "9"];
    let mut all = vec![String::from("/")];
    let mut frontier = vec![String::from("/")];
    for _ in 0..5 {
        frontier = frontier.iter().flat_map(|p| alphabet.iter().map(move |t| format!("{p}{t}"))).collect();
        all.extend(frontier.iter().cloned());
    }
    let mut plain = 0;
    for p in &all {
        if !is_plain(p) {
            continue;
        }
        plain += 1;
        for s in ALL_SETTINGS {
            assert_eq!(forwarded_path(p, &s), *p, "{p:?} {s:?}");
        }
        assert_eq!(readings_of(p).unwrap(), vec![p.clone()], "{p:?}");
    }
    assert!(plain > 10_000, "{plain}");
}

/// What an ASCII rule can tell of a reading once `lower` has run too: its ASCII characters,
/// controls (refused), and each run of other characters as one mark (a rule's byte can never
/// match there, whichever characters they are).
fn as_rules_see_it(s: &str) -> String {
    let lowered = lower(s).ok().flatten().unwrap_or_else(|| s.to_string());
    let mut out = String::new();
    for c in lowered.chars() {
        if c.is_ascii() || c.is_control() {
            out.push(c);
        } else if !out.ends_with('\u{FFFD}') {
            out.push('\u{FFFD}');
        }
    }
    out
}

#[test]
fn the_compatibility_table_decomposes_every_character_a_rule_could_tell_apart() {
    use unicode_normalization::UnicodeNormalization;
    let invisible = |c: &char| compatibility(&format!("a{c}")).ok().flatten().as_deref() == Some("a");
    let mut decomposed = 0;
    for c in (0x80u32..=0x10FFFF).filter_map(char::from_u32) {
        let full: String = std::iter::once(c).nfkd().filter(|d| !invisible(d)).collect();
        if let Some(d) = compat_fold(c) {
            assert_eq!(
                d,
                std::iter::once(c).nfkd().collect::<String>(),
                "U+{:04X}: the table holds its NFKD",
                c as u32
            );
            decomposed += 1;
        }
        let ours = compatibility(&c.to_string()).ok().flatten().unwrap_or_else(|| c.to_string());
        assert_eq!(as_rules_see_it(&ours), as_rules_see_it(&full), "U+{:04X} reads as NFKD reads it", c as u32);
    }
    assert!(decomposed > 2000, "{decomposed} characters in the table");
    // The cases the table is for, by name.
    for (input, want) in [("／ａｄｍｉｎ", "/admin"), ("．．", ".."), ("ﬁle", "file"), ("𝚤", "ı"), ("é", "e\u{301}")]
    {
        assert_eq!(compatibility(input).unwrap().as_deref(), Some(want), "{input}");
    }
    assert_eq!(compatibility("/ad\u{200B}min").unwrap().as_deref(), Some("/admin"), "invisible characters go");
    assert_eq!(
        compatibility("/\u{FF76}").unwrap(),
        None,
        "halfwidth ｶ stays: no rule can tell it from its decomposition カ"
    );
}

#[test]
fn the_ascii_case_folds_are_all_that_std_knows() {
    // Every non-ASCII character whose lower case, or else upper case, starts with an ASCII
    // character, by std's (the toolchain's Unicode) case tables: exactly the list, folded alike.
    let from_std: Vec<(char, char)> = (0x80u32..=0x10FFFF)
        .filter_map(char::from_u32)
        .filter_map(|c| {
            let folded = c
                .to_lowercase()
                .next()
                .filter(char::is_ascii)
                .or_else(|| c.to_uppercase().next().filter(char::is_ascii).map(|u| u.to_ascii_lowercase()));
            folded.map(|f| (c, f))
        })
        .collect();
    assert_eq!(from_std, ASCII_CASE_FOLDS.to_vec());
    // And `lower` applies them: `/ADMİN/` and `/ﬁle` read as `/admin/` and `/fle`; other
    // characters stay.
    assert_eq!(lower("/ADM\u{130}N/").ok().flatten().as_deref(), Some("/admin/"));
    assert_eq!(lower("/\u{FB01}le").ok().flatten().as_deref(), Some("/fle"));
    assert_eq!(lower("/\u{E9}t\u{E9}").ok().flatten(), None);
}
