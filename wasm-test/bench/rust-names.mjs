// Rust's legacy symbol mangling (`_ZN<len><ident>…17h<hash>E`), as far as the bench's reports
// need it: the path's segments, with the common `$…$` escapes undone.

/** The demangled segments of a legacy-mangled Rust name, or null if it is not one. */
export function legacySegments(name) {
  const m = /^_ZN(.*?)(?:17h[0-9a-f]{16})?E$/.exec(name);
  if (!m) return null;
  const segs = [];
  let rest = m[1];
  while (rest.length) {
    const len = /^(\d+)/.exec(rest);
    if (!len) break;
    const n = Number(len[1]);
    segs.push(unescape(rest.slice(len[1].length, len[1].length + n)));
    rest = rest.slice(len[1].length + n);
  }
  return segs;
}

function unescape(seg) {
  return seg.replace(/\$LT\$/g, '<').replace(/\$GT\$/g, '>').replace(/\$u20\$/g, ' ').replace(/\$RF\$/g, '&')
    .replace(/\$BP\$/g, '*').replace(/\$C\$/g, ',').replace(/\$u5b\$/g, '[').replace(/\$u5d\$/g, ']')
    .replace(/\.\./g, '::');
}

/** `core::str::…` for a legacy-mangled name; other names as they are. */
export function demangle(name) {
  const segs = legacySegments(name);
  return segs ? segs.join('::') : name;
}
