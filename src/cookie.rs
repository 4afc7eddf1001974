//! HTTP cookies (RFC 6265): reading the `Cookie` header(s), writing `Set-Cookie`, and splitting a
//! value too large for one cookie into numbered chunks.
//!
//! A chunked cookie `name` is written as `name=chunks.N` plus `name.0` … `name.N-1`. The pieces
//! are joined before the (MAC-checked) value is opened, so a missing, extra or reordered chunk
//! simply fails verification.

/// Browsers keep at least 4096 bytes per cookie (name, value and attributes); stay well below.
pub const MAX_COOKIE_VALUE: usize = 3800;
/// A chunked value has at most this many chunks (~38 KB); beyond that the session is refused.
pub const MAX_CHUNKS: usize = 10;

/// The cookies of a request, in order, from every `Cookie` header (HTTP/2 may split them).
pub fn parse<'a>(headers: impl Iterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    for header in headers {
        for pair in pairs(header) {
            let pair = pair.trim_matches(' ');
            if let Some((name, value)) = pair.split_once('=') {
                let value = value.trim_matches(' ');
                let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
                if !name.is_empty() {
                    out.push((name, value));
                }
            }
        }
    }
    out
}

/// The `name=value` pairs of the `Cookie` header(s), exactly as sent, except those whose name
/// `drop` selects (to pass a request's other cookies on untouched).
pub fn raw_pairs_except<'a>(headers: impl Iterator<Item = &'a str>, drop: impl Fn(&str) -> bool) -> Vec<&'a str> {
    headers
        .flat_map(pairs)
        .map(|pair| pair.trim_matches(' '))
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !drop(pair.split_once('=').map_or(*pair, |(n, _)| n)))
        .collect()
}

/// The `;`-separated parts of a `Cookie` header. A session cookie makes this header kilobytes
/// long and it is read on every request: `memchr` finds the separators with SIMD (Wasm's
/// included), several times faster than `str::split`.
fn pairs(header: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b';', header.as_bytes()).chain(std::iter::once(header.len()));
    // `;` is ASCII, so every cut is on a character boundary.
    ends.map(move |end| {
        let part = header.get(start..end).unwrap_or_default();
        start = end + 1;
        part
    })
}

/// The value of the first cookie named `name`.
pub fn get<'a>(cookies: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    cookies.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Reassembles a possibly chunked cookie. `None` if absent or if a chunk is missing.
pub fn get_chunked(cookies: &[(&str, &str)], name: &str) -> Option<String> {
    let head = get(cookies, name)?;
    let Some(count) = head.strip_prefix("chunks.") else {
        return Some(head.to_string());
    };
    let count: usize = count.parse().ok().filter(|n| (1..=MAX_CHUNKS).contains(n))?;
    let mut value = String::new();
    for i in 0..count {
        value.push_str(get(cookies, &format!("{name}.{i}"))?);
    }
    Some(value)
}

/// Cookie attributes shared by gatehouse's cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub path: String,
    pub domain: Option<String>,
    pub secure: bool,
    pub same_site: &'static str,
}

/// A `Set-Cookie` value. `max_age: Some(0)` deletes the cookie.
pub fn set_cookie(name: &str, value: &str, attrs: &Attributes, max_age: Option<u64>) -> String {
    let mut s = format!("{name}={value}; Path={}", attrs.path);
    if let Some(domain) = &attrs.domain {
        s.push_str("; Domain=");
        s.push_str(domain);
    }
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    s.push_str("; HttpOnly");
    if attrs.secure {
        s.push_str("; Secure");
    }
    s.push_str("; SameSite=");
    s.push_str(attrs.same_site);
    s
}

/// `Set-Cookie` values storing `value` under `name`, chunked if needed, and deleting chunks of
/// an earlier, longer value that the request still carries. `None` if the value is too large
/// even for `MAX_CHUNKS` chunks.
pub fn set_chunked(
    name: &str,
    value: &str,
    attrs: &Attributes,
    max_age: u64,
    request_cookies: &[(&str, &str)],
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let used = if value.len() <= MAX_COOKIE_VALUE {
        out.push(set_cookie(name, value, attrs, Some(max_age)));
        0
    } else {
        // Values are base64url and ASCII: splitting on byte boundaries is safe.
        let pieces: Vec<&str> =
            value.as_bytes().chunks(MAX_COOKIE_VALUE).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        if pieces.len() > MAX_CHUNKS {
            return None;
        }
        out.push(set_cookie(name, &format!("chunks.{}", pieces.len()), attrs, Some(max_age)));
        for (i, piece) in pieces.iter().enumerate() {
            out.push(set_cookie(&format!("{name}.{i}"), piece, attrs, Some(max_age)));
        }
        pieces.len()
    };
    out.extend(stale_chunks(name, used, attrs, request_cookies));
    Some(out)
}

/// `Set-Cookie` values deleting `name` and all its chunks present in the request.
pub fn delete_chunked(name: &str, attrs: &Attributes, request_cookies: &[(&str, &str)]) -> Vec<String> {
    let mut out = vec![set_cookie(name, "", attrs, Some(0))];
    out.extend(stale_chunks(name, 0, attrs, request_cookies));
    out
}

fn stale_chunks(name: &str, keep: usize, attrs: &Attributes, request_cookies: &[(&str, &str)]) -> Vec<String> {
    let prefix = format!("{name}.");
    // Kept sorted and unique as they come (a handful): no sort code in the module for this.
    let mut stale: Vec<usize> = Vec::new();
    for i in request_cookies.iter().filter_map(|(n, _)| n.strip_prefix(prefix.as_str())?.parse::<usize>().ok()) {
        if i >= keep {
            if let Err(at) = stale.binary_search(&i) {
                stale.insert(at, i);
            }
        }
    }
    stale.into_iter().map(|i| set_cookie(&format!("{name}.{i}"), "", attrs, Some(0))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attributes {
        Attributes { path: "/".into(), domain: None, secure: true, same_site: "Lax" }
    }

    #[test]
    fn parses_every_cookie_header() {
        let headers = ["a=1; b=2", "c=\"3\";d=", "junk; =x; e = 5 "];
        let c = parse(headers.into_iter());
        assert_eq!(c, vec![("a", "1"), ("b", "2"), ("c", "3"), ("d", ""), ("e ", "5")]);
        assert_eq!(get(&c, "b"), Some("2"));
        assert_eq!(get(&c, "z"), None);
    }

    #[test]
    fn other_cookies_pass_untouched() {
        let headers = ["a=\"q\"; _s=1; _s.0=x", "b=2;_s_st_abc=y"];
        let kept = raw_pairs_except(headers.into_iter(), |n| n.starts_with("_s"));
        assert_eq!(kept, vec!["a=\"q\"", "b=2"]);
    }

    #[test]
    fn set_cookie_attributes() {
        assert_eq!(set_cookie("s", "v", &attrs(), Some(60)), "s=v; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Lax");
        let a =
            Attributes { path: "/app".into(), domain: Some("example.com".into()), secure: false, same_site: "Strict" };
        assert_eq!(
            set_cookie("s", "", &a, Some(0)),
            "s=; Path=/app; Domain=example.com; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn chunking_round_trips_and_clears_stale_chunks() {
        let big = "x".repeat(MAX_COOKIE_VALUE * 2 + 10);
        let set = set_chunked("s", &big, &attrs(), 60, &[("s.5", "old")]).unwrap();
        assert_eq!(set.len(), 5, "{set:?}");
        assert!(set[0].starts_with("s=chunks.3;"));
        assert!(set[4].starts_with("s.5=; Path=/; Max-Age=0"));
        // What a browser would send back.
        let values: Vec<(String, String)> = set[..4]
            .iter()
            .map(|c| {
                let (nv, _) = c.split_once(';').unwrap();
                let (n, v) = nv.split_once('=').unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        let jar: Vec<(&str, &str)> = values.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(get_chunked(&jar, "s").unwrap(), big);
        // A missing chunk: no value at all.
        let missing: Vec<(&str, &str)> = jar.iter().copied().filter(|(n, _)| *n != "s.1").collect();
        assert_eq!(get_chunked(&missing, "s"), None);
        // A small value after a chunked one deletes the old chunks.
        let small = set_chunked("s", "tiny", &attrs(), 60, &jar).unwrap();
        assert_eq!(small.len(), 4);
        assert!(small[1..].iter().all(|c| c.contains("Max-Age=0")));
    }

    #[test]
    fn stale_chunks_are_deleted_once_each_in_order() {
        let jar = [("s.7", "a"), ("s.1", "b"), ("s.5", "c"), ("s.5", "d"), ("s.x", "e"), ("t.9", "f")];
        let set = delete_chunked("s", &attrs(), &jar);
        let names: Vec<&str> = set.iter().map(|c| c.split_once('=').unwrap().0).collect();
        assert_eq!(names, ["s", "s.1", "s.5", "s.7"]);
    }

    #[test]
    fn chunk_limits() {
        assert!(set_chunked("s", &"x".repeat(MAX_COOKIE_VALUE * (MAX_CHUNKS + 1)), &attrs(), 60, &[]).is_none());
        for bad in ["chunks.0", "chunks.11", "chunks.x", "chunks.-1"] {
            assert_eq!(get_chunked(&[("s", bad)], "s"), None, "{bad}");
        }
        assert_eq!(delete_chunked("s", &attrs(), &[("s.0", "a"), ("s.1", "b"), ("other.2", "c")]).len(), 3);
    }
}
