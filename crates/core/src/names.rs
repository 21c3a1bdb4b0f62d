//! Validation of the names a client gives: streams, consumers, stores, subjects, filters and
//! key-value keys.
//!
//! What Jetway creates or publishes follows Windshift's rules (section B.3.1 of the spec) with its
//! bugs fixed: filters may start with a wildcard (`*.created`, `>`), and a wildcard must be a whole
//! token (`a.*b` is rejected). What already exists and is only read, administered, fetched from or
//! listed is named by JetStream's own, looser rules ([`validate_existing_name`],
//! [`validate_existing_filter`]), so streams, consumers and subjects made by other NATS clients, or
//! by Jetway itself (`$JW.DLQ.…`, `$KV.…`), can be named. Keys follow JetStream's key-value rules,
//! so keys written by other NATS clients (which may contain `/` and `=`) can be read through Jetway.

use crate::Error;

/// Longest name or subject accepted. JetStream allows names up to 255 bytes in file paths.
const MAX_NAME_LEN: usize = 255;
/// Longest subject accepted; NATS has no hard limit, but a bound keeps headers and logs sane.
const MAX_SUBJECT_LEN: usize = 1024;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// What JetStream itself accepts in a name or a subject token: anything but whitespace, control
/// characters and the characters NATS gives a meaning (`.`, `*`, `>`), and in names also path
/// separators (a stream name becomes a directory).
fn is_nats_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>')
}

fn is_nats_name_char(c: char) -> bool {
    is_nats_char(c) && !matches!(c, '/' | '\\')
}

fn is_key_char(c: char) -> bool {
    is_name_char(c) || c == '/' || c == '='
}

/// What kind of dot-separated name is checked: the characters its tokens may hold, and how error
/// messages call it and describe those characters.
#[derive(Clone, Copy)]
struct Charset {
    noun: &'static str,
    allowed: fn(char) -> bool,
    described: &'static str,
}

const SUBJECT_CHARS: Charset = Charset {
    noun: "subject",
    allowed: is_name_char,
    described: "letters, digits, '_', '-' and '.'",
};

const NATS_CHARS: Charset = Charset {
    noun: "subject",
    allowed: is_nats_char,
    described: "anything but whitespace",
};

const KEY_CHARS: Charset = Charset {
    noun: "key",
    allowed: is_key_char,
    described: "letters, digits, '_', '-', '/', '=' and '.'",
};

/// Checks a stream, consumer or store name: non-empty, only `a-z A-Z 0-9 _ -`.
pub fn validate_name(field: &str, name: &str) -> Result<(), Error> {
    check_name(field, name, is_name_char, |c| {
        format!("{name:?} contains {c:?}; only letters, digits, '_' and '-' are allowed")
    })
}

/// Checks the name of a stream or consumer that already exists, for Jetway's own calls on it
/// (reads, administration, Fetch, dead-letter filters), by JetStream's own rule, which is looser
/// than [`validate_name`]'s: streams and consumers made by other NATS clients (`orders:v1`,
/// `KV_config`) can be named too. Windshift's calls keep Windshift's rule.
pub fn validate_existing_name(field: &str, name: &str) -> Result<(), Error> {
    check_name(field, name, is_nats_name_char, |c| {
        format!("{name:?} contains {c:?}, which JetStream does not allow in a name")
    })
}

/// A name: non-empty, at most [`MAX_NAME_LEN`], and only `allowed` characters (`why` tells about
/// the first one that is not).
fn check_name(
    field: &str,
    name: &str,
    allowed: fn(char) -> bool,
    why: impl FnOnce(char) -> String,
) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    match name.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(Error::invalid(field, why(c))),
        None => Ok(()),
    }
}

/// Checks a subject filter over what is already stored (reads and administration) by JetStream's
/// own rule, so subjects that other NATS clients or Jetway itself wrote (`$JW.DLQ.>`, `$KV.config.>`)
/// can be named; a wildcard is still a whole token.
pub fn validate_existing_filter(field: &str, filter: &str) -> Result<(), Error> {
    check_subject(field, filter, true, NATS_CHARS)
}

/// Checks a concrete subject by NATS's own rule (requests, which may go to any NATS responder, e.g.
/// `$SRV.PING`): dot-separated tokens without whitespace or wildcards.
pub fn validate_nats_subject(field: &str, subject: &str) -> Result<(), Error> {
    check_subject(field, subject, false, NATS_CHARS)
}

/// Checks a concrete subject (publishing): dot-separated tokens of `a-z A-Z 0-9 _ -`.
pub fn validate_subject(field: &str, subject: &str) -> Result<(), Error> {
    check_subject(field, subject, false, SUBJECT_CHARS)
}

/// Checks a subject filter: like [`validate_subject`], but a token may also be `*` (one token) or,
/// as the last token, `>` (one or more tokens).
pub fn validate_filter(field: &str, filter: &str) -> Result<(), Error> {
    check_subject(field, filter, true, SUBJECT_CHARS)
}

/// Checks a key-value key, by JetStream's rules: dot-separated tokens of `a-z A-Z 0-9 _ - / =`, so no
/// leading, trailing or double `.`.
pub fn validate_key(field: &str, key: &str) -> Result<(), Error> {
    check_subject(field, key, false, KEY_CHARS)
}

/// Checks a key pattern: like [`validate_key`], but a token may also be `*` (one token) or, as the
/// last token, `>` (one or more tokens).
pub fn validate_key_filter(field: &str, filter: &str) -> Result<(), Error> {
    check_subject(field, filter, true, KEY_CHARS)
}

/// Whether two subjects or filters can match a common subject: token by token, a `*` matches any
/// one token and a `>` any one or more. Both must be valid filters.
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            _ => return false,
        }
    }
}

fn check_subject(
    field: &str,
    subject: &str,
    wildcards: bool,
    charset: Charset,
) -> Result<(), Error> {
    if subject.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_SUBJECT_LEN} characters"),
        ));
    }
    let noun = charset.noun;
    let invalid =
        |why: &str| Error::invalid(field, format!("{subject:?} is not a valid {noun}: {why}"));
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        match token {
            "" => {
                return Err(invalid(
                    "it has an empty token (a leading, trailing or double '.')",
                ));
            }
            "*" | ">" if !wildcards => {
                return Err(invalid("wildcards are not allowed here"));
            }
            "*" => {}
            ">" if last => {}
            ">" => return Err(invalid("'>' must be the last token")),
            _ => {
                if let Some(c) = token.chars().find(|c| !(charset.allowed)(*c)) {
                    return Err(invalid(&match c {
                        '*' | '>' if wildcards => format!("{c:?} must be a whole token"),
                        '*' | '>' => "wildcards are not allowed here".to_owned(),
                        _ => format!("{c:?} is not allowed; use {}", charset.described),
                    }));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_names_and_filters_follow_jetstreams_rules() {
        for name in ["orders", "orders:v1", "KV_config", "$weird"] {
            assert!(validate_existing_name("stream", name).is_ok(), "{name}");
        }
        for name in ["", "a b", "a.b", "a*", "a>", "a/b", "a\\b", "a\tb"] {
            assert!(validate_existing_name("stream", name).is_err(), "{name:?}");
        }
        for filter in ["$JW.DLQ.dead.orders.billing.>", "$KV.config.*", "a:b.c"] {
            assert!(
                validate_existing_filter("subject", filter).is_ok(),
                "{filter}"
            );
        }
        for filter in ["", "a..b", "a b", "a.*b", "a.>.b"] {
            assert!(
                validate_existing_filter("subject", filter).is_err(),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn overlap_is_a_common_subject_token_by_token() {
        for (a, b) in [
            ("orders.>", "orders.created"),
            ("orders.>", ">"),
            ("*.created", "orders.>"),
            ("orders.*", "orders.created"),
            ("a.*.c", "a.b.*"),
            ("a", "a"),
            ("*", "a"),
        ] {
            assert!(subjects_overlap(a, b), "{a} and {b}");
            assert!(subjects_overlap(b, a), "{b} and {a}");
        }
        for (a, b) in [
            ("other.>", "orders.>"),
            ("orders", "orders.>"),
            ("orders.*", "orders.a.b"),
            ("a.b", "a.c"),
            ("*", "a.b"),
            ("a.*.c", "a.b.d"),
        ] {
            assert!(!subjects_overlap(a, b), "{a} and {b}");
            assert!(!subjects_overlap(b, a), "{b} and {a}");
        }
    }

    #[test]
    fn subjects_without_wildcards() {
        for bad in [
            "", "%", "a/b", ".", "a..b", "a.b.c.", ".a", "a.b.*", "a.b.>", "a b", "a.*b",
        ] {
            assert!(
                validate_subject("subject", bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
        for good in [
            "a",
            "A",
            "0",
            "_",
            "-",
            "a.b",
            "a.b.c",
            "events.user-1.created_2",
        ] {
            assert!(
                validate_subject("subject", good).is_ok(),
                "{good:?} should be valid"
            );
        }
    }

    #[test]
    fn filters_allow_whole_token_wildcards_anywhere() {
        for bad in [
            "", "a.b.>.d", "a.b*", "a.b>", "a.*b", "*a", ">.a", "a..*", "a.%",
        ] {
            assert!(
                validate_filter("subjects", bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
        for good in [
            "a.b.*",
            "a.b.>",
            "a.b.c.d",
            "a.b.*.d",
            "*",
            ">",
            "*.created",
            "*.*.>",
            "a",
        ] {
            assert!(
                validate_filter("subjects", good).is_ok(),
                "{good:?} should be valid"
            );
        }
    }

    #[test]
    fn names() {
        for bad in [
            "",
            ".",
            "a.b",
            "a..b",
            "a.b.c",
            "a.b.c.",
            "a.b.*",
            "a.b.>",
            "invalid name",
        ] {
            assert!(
                validate_name("name", bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
        for good in ["a", "A", "0", "_", "-", "orders-v2_eu"] {
            assert!(
                validate_name("name", good).is_ok(),
                "{good:?} should be valid"
            );
        }
        assert!(validate_name("name", &"x".repeat(256)).is_err());
    }

    #[test]
    fn keys_follow_the_jetstream_key_value_rules() {
        for bad in [
            "", ".a", "a.", "a..b", "a b", "a*", "a.*", "a.>", "ä", "a:b",
        ] {
            assert!(
                validate_key("key", bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
        for good in ["a", "a.b", "user/42=x", "-_.x", "A.b-c_d/e=f"] {
            assert!(
                validate_key("key", good).is_ok(),
                "{good:?} should be valid"
            );
        }
        for good in ["*", ">", "users.*", "users.>", "a/b.*.c"] {
            assert!(
                validate_key_filter("key", good).is_ok(),
                "{good:?} should be a valid filter"
            );
        }
        for bad in ["", "a.>.b", "a*", "a.b>", ".a"] {
            assert!(
                validate_key_filter("key", bad).is_err(),
                "{bad:?} should be an invalid filter"
            );
        }
        let err = validate_key("key", "a:b").unwrap_err();
        assert!(err.message().contains("'/', '='"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = validate_name("consumer", "a b").unwrap_err();
        assert_eq!(err.field(), Some("consumer"));
        assert!(err.to_string().starts_with("consumer: "), "{err}");
    }
}
