//! `pages`: the pages gatehouse shows browsers itself (403, sign-in errors, the sign-out
//! question) — the built-in template, or the operator's own.

use super::raw::RawPages;
use super::Errors;

/// How gatehouse's own pages look.
#[derive(Debug, PartialEq, Eq)]
pub struct Pages {
    /// `pages.template`: the operator's page (`None`: the built-in one).
    pub template: Option<String>,
    /// `pages.contentSecurityPolicy`, sent with every page.
    pub content_security_policy: String,
}

/// The placeholders a template may use. Text ones are HTML-escaped; `action`, `detail` and
/// `reference` are fragments gatehouse builds (possibly empty).
pub const PLACEHOLDERS: &[&str] = &["status", "title", "message", "detail", "action", "requestId", "reference"];

/// The built-in pages' policy: nothing loads, styles are inline, nothing frames them. (No
/// `form-action 'self'`: browsers apply it to the redirects after a form's POST too, and the
/// sign-out form's answer redirects to the provider's logout.)
pub const DEFAULT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

#[inline(never)] // see `build` in config/mod.rs
pub(super) fn read(raw: RawPages, errors: &mut Errors) -> Pages {
    if let Some(t) = &raw.template {
        check_template(t, errors);
    }
    let csp = raw.content_security_policy.unwrap_or_else(|| DEFAULT_CSP.into());
    if csp.is_empty() || !csp.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        errors.add("pages.contentSecurityPolicy", "expected a non-empty header value of printable ASCII");
    }
    Pages { template: raw.template, content_security_policy: csp }
}

/// A template names only known placeholders, and `{{action}}` (the sign-out question's form).
#[inline(never)] // configuration code: one copy, not one per caller
fn check_template(t: &str, errors: &mut Errors) {
    if t.len() > MAX_TEMPLATE_BYTES {
        errors.add("pages.template", format!("at most {MAX_TEMPLATE_BYTES} bytes, found {}", t.len()));
        return;
    }
    let mut rest = t;
    let mut has_action = false;
    while let Some(start) = rest.find("{{") {
        let after = rest.get(start + 2..).unwrap_or("");
        let Some(end) = after.find("}}") else {
            errors.add("pages.template", "a `{{` without its `}}`");
            return;
        };
        let name = after.get(..end).unwrap_or("");
        if !PLACEHOLDERS.contains(&name) {
            errors.add(
                "pages.template",
                format!("unknown placeholder {{{{{name:.40}}}}}; known: {}", PLACEHOLDERS.join(", ")),
            );
        }
        has_action |= name == "action";
        rest = after.get(end + 2..).unwrap_or("");
    }
    if !has_action {
        errors.add("pages.template", "must contain {{action}}: the sign-out question's form and the pages' links");
    }
}
