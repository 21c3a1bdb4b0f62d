//! The patterns of an allow-list: NATS subject patterns for subjects, and name patterns for
//! streams, consumers and key-value stores.
//!
//! Subjects follow NATS exactly: tokens separated by `.`, `*` matches one whole token, `>` (last)
//! matches one or more. Names have no dots, so a whole-token wildcard could not express "every
//! stream of tenant A"; in a name pattern `*` matches any run of characters (`a-*` matches `a-orders`)
//! and `>` alone matches every name.

/// A NATS subject pattern (`orders.*.created`, `tenant-a.>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPattern(String);

impl SubjectPattern {
    /// Reads a pattern: non-empty tokens, `*` and `>` only as whole tokens, `>` only last.
    pub fn parse(pattern: &str) -> Result<SubjectPattern, String> {
        let tokens: Vec<&str> = pattern.split('.').collect();
        for (i, token) in tokens.iter().enumerate() {
            if token.is_empty() {
                return Err("has an empty token (a leading, trailing or double dot)".to_owned());
            }
            if token.chars().any(char::is_whitespace) {
                return Err("contains whitespace".to_owned());
            }
            if (token.contains('*') && *token != "*") || (token.contains('>') && *token != ">") {
                return Err("has a wildcard that is not a whole token".to_owned());
            }
            if *token == ">" && i + 1 != tokens.len() {
                return Err("has `>` before its last token".to_owned());
            }
        }
        Ok(SubjectPattern(pattern.to_owned()))
    }

    /// True if `subject` (or every subject a filter `subject` with wildcards can match) matches
    /// this pattern: a literal is covered by itself, `*` and `>`; a filter's `*` by `*` or `>`;
    /// a filter's `>` only by `>`.
    pub fn covers(&self, subject: &str) -> bool {
        let mut pattern = self.0.split('.');
        let mut tokens = subject.split('.');
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(token)) if token != ">" => {}
                (Some(p), Some(token)) if p == token && p != "*" => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A pattern of stream, consumer or store names: `*` matches any run of characters, `>` alone
/// matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// Reads a name pattern: non-empty, without dots, slashes or whitespace.
    pub fn parse(pattern: &str) -> Result<NamePattern, String> {
        if pattern.is_empty() {
            return Err("is empty".to_owned());
        }
        if pattern
            .chars()
            .any(|c| c == '.' || c == '/' || c.is_whitespace())
        {
            return Err("contains a dot, a slash or whitespace (names have none)".to_owned());
        }
        if pattern.contains('>') && pattern != ">" {
            return Err("uses `>` other than alone (`>` matches every name)".to_owned());
        }
        Ok(NamePattern(pattern.to_owned()))
    }

    /// True if `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.0 == ">" || glob(self.0.as_bytes(), name.as_bytes())
    }
}

/// `*` matches any run of bytes (names are ASCII); everything else matches itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob(rest, &name[skip..])),
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

/// A pattern of consumers: `stream` (every consumer of the matching streams, and live
/// subscriptions to them) or `stream/consumer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPattern {
    stream: NamePattern,
    consumer: Option<NamePattern>,
}

impl ConsumerPattern {
    /// Reads `stream` or `stream/consumer`, each a [`NamePattern`].
    pub fn parse(pattern: &str) -> Result<ConsumerPattern, String> {
        let (stream, consumer) = match pattern.split_once('/') {
            Some((stream, consumer)) => (stream, Some(NamePattern::parse(consumer)?)),
            None => (pattern, None),
        };
        Ok(ConsumerPattern {
            stream: NamePattern::parse(stream)?,
            consumer,
        })
    }

    /// True if the pattern allows some consumer of `stream`.
    pub fn stream_matches(&self, stream: &str) -> bool {
        self.stream.matches(stream)
    }

    /// True if the pattern allows `stream`'s `consumer`, or with no consumer (a live
    /// subscription, an unnamed consumer) the whole stream.
    pub fn matches(&self, stream: &str, consumer: Option<&str>) -> bool {
        self.stream.matches(stream)
            && match (&self.consumer, consumer) {
                (None, _) => true,
                (Some(pattern), Some(consumer)) => pattern.matches(consumer),
                (Some(_), None) => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_patterns_follow_nats() {
        let p = |s| SubjectPattern::parse(s).unwrap();
        assert!(p("a.>").covers("a.b"));
        assert!(p("a.>").covers("a.b.c"));
        assert!(!p("a.>").covers("a"));
        assert!(p("a.*").covers("a.b"));
        assert!(!p("a.*").covers("a.b.c"));
        assert!(!p("a.*").covers("b.c"));
        assert!(p("a.b").covers("a.b"));
        assert!(!p("a.b").covers("a.bc"));
        assert!(p(">").covers("anything.at.all"));
        // Filters with wildcards are covered only by patterns at least as wide.
        assert!(p("a.>").covers("a.*"));
        assert!(p("a.>").covers("a.>"));
        assert!(!p("a.*").covers("a.>"));
        assert!(!p("a.b").covers("a.*"));
        assert!(!p("a.*.c").covers("a.>"));
        for bad in ["", "a..b", "a.>.b", "a*", "a.b>", ".a", "a b"] {
            assert!(SubjectPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_patterns_match_prefixes_and_everything() {
        let p = |s| NamePattern::parse(s).unwrap();
        assert!(p("a-*").matches("a-orders"));
        assert!(p("a-*").matches("a-"));
        assert!(!p("a-*").matches("b-orders"));
        assert!(p("*-orders").matches("a-orders"));
        assert!(p(">").matches("KV_x"));
        assert!(p("*").matches("x"));
        assert!(p("orders").matches("orders"));
        assert!(!p("orders").matches("orders2"));
        for bad in ["", "a.b", "a/b", "a>", "a b"] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn consumer_patterns_name_a_stream_or_one_of_its_consumers() {
        let p = |s| ConsumerPattern::parse(s).unwrap();
        assert!(p("a-*").matches("a-orders", Some("billing")));
        assert!(p("a-*").matches("a-orders", None));
        assert!(p("a-orders/billing").matches("a-orders", Some("billing")));
        assert!(!p("a-orders/billing").matches("a-orders", Some("shipping")));
        assert!(!p("a-orders/billing").matches("a-orders", None));
        assert!(!p("a-*/billing").matches("b-orders", Some("billing")));
    }
}
