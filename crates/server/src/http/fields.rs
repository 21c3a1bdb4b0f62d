//! Decoding the JSON bodies of the KV and admin routes ([`object`]) so that every mistake is a 400
//! naming the field at fault, and the durations those bodies carry ([`duration`]).

use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::{error::ApiError, json};

/// Decodes a JSON object body into `T`, whose fields must all be optional (`#[serde(default)]`)
/// and which denies unknown fields. An empty body is `{}`. A body that is not JSON is 400 naming
/// `body`; a field of the wrong type, or one `T` does not have, is 400 naming that field.
pub fn object<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        let media = json::content_type(headers)?.map(|value| json::media_type(&value));
        if media.as_deref().is_some_and(|media| !json::is_json(media)) {
            return Err(ApiError::invalid(
                "Content-Type",
                "must be application/json",
            ));
        }
        serde_json::from_slice(body)
            .map_err(|err| ApiError::invalid("body", format!("is not JSON: {err}")))?
    };
    let Value::Object(fields) = &value else {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    };
    serde_json::from_value(value.clone()).map_err(|err| {
        // serde says what is wrong, but not where: the field at fault is the one that fails
        // alone (every field being optional, the others decode by themselves).
        let field = fields.iter().find_map(|(name, value)| {
            let alone = Value::Object([(name.clone(), value.clone())].into_iter().collect());
            serde_json::from_value::<T>(alone).is_err().then_some(name)
        });
        ApiError::invalid(field.map_or("body", String::as_str), err)
    })
}

/// Parses a duration as protobuf's JSON writes it (`"90s"`, `"1.5s"`), or with the unit `ms`,
/// `m` or `h` (`"500ms"`, `"10m"`, `"24h"`).
pub fn duration(field: &str, value: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::invalid(
            field,
            format!("{value:?} is not a duration such as \"500ms\", \"90s\", \"10m\" or \"24h\""),
        )
    };
    let value = value.trim();
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    // Digits and at most one point only: no sign, exponent, `inf` or `NaN`.
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    let well_formed = !number.is_empty()
        && match number.split_once('.') {
            Some((whole, fraction)) => digits(whole) && digits(fraction) && !fraction.is_empty(),
            None => digits(number),
        };
    if !well_formed {
        return Err(bad());
    }
    let seconds = number.parse::<f64>().map_err(|_| bad())? * scale;
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// Writes a duration as protobuf's JSON does: seconds with a trailing `s` (`"90s"`, `"0.5s"`).
pub fn format_duration(value: Duration) -> String {
    format!("{}s", value.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Options {
        ttl: Option<String>,
        history: Option<u32>,
    }

    fn decode(body: &str) -> Result<Options, ApiError> {
        object(&HeaderMap::new(), &Bytes::from(body.to_owned()))
    }

    #[test]
    fn bodies_name_the_field_at_fault() {
        assert_eq!(decode("").unwrap(), Options::default());
        assert_eq!(decode(r#"{"history":3}"#).unwrap().history, Some(3));
        let field = |body| decode(body).unwrap_err().body().error.field.clone();
        assert_eq!(
            field(r#"{"ttl":"1s","history":"x"}"#).as_deref(),
            Some("history")
        );
        assert_eq!(field(r#"{"colour":1}"#).as_deref(), Some("colour"));
        assert_eq!(field("[1]").as_deref(), Some("body"));
        assert_eq!(field("{").as_deref(), Some("body"));
    }

    #[test]
    fn durations_take_units_and_refuse_the_rest() {
        assert_eq!(duration("d", "90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("d", "1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("d", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("d", "10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration("d", "24h").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "s", "5", "-1s", "1e3s", "5d", "1.s", "infs"] {
            assert!(duration("d", bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(
            duration("d", &format_duration(Duration::from_secs(7))).unwrap(),
            Duration::from_secs(7)
        );
    }
}
