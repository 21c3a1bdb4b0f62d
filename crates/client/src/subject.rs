//! Subject matching, the way NATS matches: dot-separated tokens, where `*` stands for one token and a
//! last `>` for one or more. [`Streams::for_subject`](crate::Streams::for_subject) uses it to find
//! the streams behind a subject from the stream listing, since no call answers that directly.

/// Whether some subject matches both `a` and `b`, each a subject or a filter with wildcards: the
/// rule JetStream uses to tell whether a consumer filter or a stream's subjects overlap another's.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            // `>` takes the rest, which the other side has at least one token of.
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => continue,
            (Some(_), Some(_)) => return false,
            (None, None) => return true,
            // One side has more tokens; a `>` there would need at least one more on this side.
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn literal_subjects_overlap_only_themselves() {
        assert!(overlaps("orders.created", "orders.created"));
        assert!(!overlaps("orders.created", "orders.paid"));
        assert!(!overlaps("orders", "orders.created"));
        assert!(!overlaps("orders.created", "orders"));
    }

    #[test]
    fn a_star_matches_one_token() {
        assert!(overlaps("orders.*", "orders.created"));
        assert!(overlaps("orders.created", "*.created"));
        assert!(overlaps("*.created", "orders.*"));
        assert!(!overlaps("orders.*", "orders"));
        assert!(!overlaps("orders.*", "orders.created.eu"));
    }

    #[test]
    fn a_last_greater_than_matches_one_or_more_tokens() {
        assert!(overlaps("orders.>", "orders.created"));
        assert!(overlaps("orders.created.eu", "orders.>"));
        assert!(overlaps(">", "orders"));
        assert!(overlaps("orders.>", "*.created"));
        assert!(overlaps("orders.>", ">"));
        assert!(!overlaps("orders.>", "orders"));
        assert!(!overlaps("orders.>", "clicks.>"));
        assert!(!overlaps("orders.*.eu", "orders.created.us"));
    }
}
