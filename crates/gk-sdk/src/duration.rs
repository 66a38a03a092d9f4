//! Durations as the Go host wrote them: `30s`, `500ms`, `2m`, `1h30m`, `1.5s`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration `{input}`: {problem} (write a number and a unit, e.g. `30s`, `500ms`, `2m`)"
)]
pub struct DurationError {
    input: String,
    problem: String,
}

impl DurationError {
    fn new(input: &str, problem: impl Into<String>) -> Self {
        Self {
            input: input.to_owned(),
            problem: problem.into(),
        }
    }
}

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration in Go's `time.ParseDuration` syntax (without a sign): one or more
/// number-unit pairs, units `ns`, `us`, `ms`, `s`, `m`, `h`; `0` alone is zero.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(gk_sdk::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert!(gk_sdk::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::new(input, "it is empty"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(DurationError::new(input, "it is negative"));
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(DurationError::new(input, "expected a number"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::new(input, format!("`{number}` has no unit")));
        }
        let Some((_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::new(input, format!("unknown unit `{unit}`")));
        };
        total_nanos = total_nanos
            .checked_add(
                scaled(number, *scale)
                    .ok_or_else(|| DurationError::new(input, "it is too large"))?,
            )
            .ok_or_else(|| DurationError::new(input, "it is too large"))?;
        rest = next;
    }
    let nanos =
        u64::try_from(total_nanos).map_err(|_| DurationError::new(input, "it is too large"))?;
    Ok(Duration::from_nanos(nanos))
}

/// `number` (digits with at most one `.`) times `scale` nanoseconds, truncated like Go.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(scale)?;
    let mut divisor: u128 = 1;
    let mut fraction_value: u128 = 0;
    for digit in fraction.chars().take(18) {
        fraction_value = fraction_value * 10 + u128::from(digit.to_digit(10)?);
        divisor *= 10;
    }
    nanos = nanos.checked_add(fraction_value.checked_mul(scale)? / divisor)?;
    Some(nanos)
}

/// Formats a duration in the largest unit that represents it exactly (`90s`, `2m`, `1500ms`),
/// so that [`parse_duration`] gives the same value back.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, scale) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

/// Serde adapters for durations written as strings.
pub(crate) mod serde_string {
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Duration>`: absent, `null` and `""` are `None`.
    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            value: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(duration) => serializer.serialize_str(&format_duration(*duration)),
                None => serializer.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(deserializer)? {
                None => Ok(None),
                Some(text) if text.trim().is_empty() => Ok(None),
                Some(text) => parse_duration(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        for (text, expected) in [
            ("30s", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
            ("250us", Duration::from_micros(250)),
            ("10µs", Duration::from_micros(10)),
            (" 5s ", Duration::from_secs(5)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_bad_durations_with_the_problem() {
        for (text, problem) in [
            ("", "it is empty"),
            ("30", "`30` has no unit"),
            ("5 parsecs", "unknown unit ` parsecs`"),
            ("-5s", "it is negative"),
            ("s", "expected a number"),
            ("1.2.3s", "expected a number"),
            ("99999999999999h", "it is too large"),
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains(problem), "{text}: {err}");
            assert!(err.contains(&format!("`{text}`")), "{text}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for millis in [
            0u64, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 5_400_000,
        ] {
            let d = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{millis}ms");
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_nanos(7)), "7ns");
    }
}
