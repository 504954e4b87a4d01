//! Secrets out of everything shown or kept: the values of configured secrets
//! and the shapes of common credentials are replaced by `***` in step output,
//! argv shown on cards, the audit log and logs.

use std::borrow::Cow;

use regex::{Captures, Regex};

pub const MASK: &str = "***";

/// Secret values shorter than this are not redacted: masking every `1` or
/// `on` in the output would hide more than it protects.
const MIN_SECRET_LEN: usize = 4;

/// Credential shapes. What a pattern's `keep` and `after` groups match (the
/// key name, the scheme and user) stays; only the value is masked.
const PATTERNS: &[&str] = &[
    // Authorization headers and bearer tokens.
    r"(?i)(?P<keep>\b(?:authorization|proxy-authorization)\s*[:=]\s*(?:bearer|basic|token)?\s*)[^\s'\x22]+",
    r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}",
    // key=value and key: value for the usual names.
    r#"(?i)(?P<keep>\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)["']?\s*[:=]\s*["']?)[^\s"',;&]{3,}"#,
    // Credentials in URLs: scheme://user:password@host.
    r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?P<after>@)",
    // Well-known token formats.
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bsk-[A-Za-z0-9_-]{20,}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
];

#[derive(Debug)]
pub struct Redactor {
    values: Option<Regex>,
    patterns: Vec<Regex>,
}

impl Redactor {
    /// `values`: the secrets' current values (from the environment).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= MIN_SECRET_LEN).collect();
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        let values = (!values.is_empty()).then(|| {
            let alternation = values.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|");
            Regex::new(&alternation).expect("escaped literals form a valid regex")
        });
        let patterns = PATTERNS.iter().map(|p| Regex::new(p).expect("built-in patterns are valid")).collect();
        Self { values, patterns }
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        if let Some(values) = &self.values
            && let Cow::Owned(s) = values.replace_all(&out, MASK)
        {
            out = Cow::Owned(s);
        }
        for pattern in &self.patterns {
            let replaced = pattern.replace_all(&out, |c: &Captures| {
                let part = |name: &str| c.name(name).map_or("", |m| m.as_str());
                format!("{}{MASK}{}", part("keep"), part("after"))
            });
            if let Cow::Owned(s) = replaced {
                out = Cow::Owned(s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_values_and_token_shapes_are_masked() {
        let r = Redactor::new(["hunter2-very-secret".to_owned(), "ab".to_owned()]);
        assert_eq!(r.redact("pushing with hunter2-very-secret now"), "pushing with *** now");
        assert_eq!(r.redact("ab stays: too short to be a secret"), "ab stays: too short to be a secret");
        assert_eq!(r.redact("Authorization: Bearer abcdefghijklmnop"), "Authorization: Bearer ***");
        assert_eq!(r.redact("DB_PASSWORD=s3cr3t! next"), "DB_PASSWORD=*** next");
        assert_eq!(r.redact(r#"{"api_key": "zzz-123"}"#), r#"{"api_key": "***"}"#);
        assert_eq!(
            r.redact("git clone https://bot:tok3n@git.example.com/x"),
            "git clone https://bot:***@git.example.com/x"
        );
        assert_eq!(r.redact("token ghp_0123456789abcdefghijABCDEFGHIJ012345"), "token ***");
        assert_eq!(r.redact("key AKIAABCDEFGHIJKLMNOP used"), "key *** used");
        assert_eq!(r.redact("-----BEGIN RSA PRIVATE KEY-----"), "***");
        assert_eq!(r.redact("nothing to see: version 1.4.2"), "nothing to see: version 1.4.2");
        assert!(matches!(r.redact("plain line"), Cow::Borrowed(_)));
    }
}
