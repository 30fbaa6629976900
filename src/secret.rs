//! [`Secret`]: a string that never prints. Client secrets, OAuth tokens, webhook URLs and API
//! tokens are held in it so that a `{:?}` or `{}` in a log line or an error cannot leak them.

use std::fmt;

/// A secret string. `Debug` and `Display` print `[redacted]`; [`Secret::expose`] is the one
/// way to read it, so every use is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Never pass the result to a log macro or an error message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Replaces every occurrence of each secret in `text` with `[redacted]`: for error strings that
/// come from libraries (reqwest includes the URL in its errors, and a webhook URL is a secret).
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.expose().is_empty() {
            out = out.replace(s.expose(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] Secret([redacted])");
        assert_eq!(
            redact("url https://x/hunter2 failed", &[&s]),
            "url https://x/[redacted] failed"
        );
    }
}
