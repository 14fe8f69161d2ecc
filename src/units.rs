//! Parsing the sizes and durations users type: `64MiB`, `4KiB`, `200ms`, `10s`.

use std::time::Duration;

/// A value that could not be read as a size or a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a size.
    #[error("invalid size {0:?}: expected a number of bytes with an optional unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. 64MiB")]
    Size(String),
    /// Not a duration.
    #[error("invalid duration {0:?}: expected a number with a unit, e.g. 200ms, 10s, 1m")]
    Duration(String),
    /// A size below the least a setting takes. `suggestion` is set for a number written
    /// without a unit (so taken as bytes) that would fit with one: the same number with it.
    #[error(
        "{} is below the minimum of {}{}",
        if *unitless { format!("{text} bytes") } else { text.clone() },
        format_size(*min),
        match (unitless, suggestion) {
            (true, Some(s)) => format!(" (a number without a unit is bytes): write a unit, e.g. {s}"),
            (true, None) => " (a number without a unit is bytes)".to_string(),
            (false, _) => String::new(),
        }
    )]
    TooSmall {
        /// The value as written, trimmed.
        text: String,
        /// The least the setting takes, in bytes.
        min: u64,
        /// Whether it was written without a unit.
        unitless: bool,
        /// The same number with a unit that would be accepted, when there is one.
        suggestion: Option<String>,
    },
    /// A size at or above the limit a setting takes.
    #[error("{text} is too large: must be less than {}", format_size(*limit))]
    TooLarge {
        /// The value as written, trimmed.
        text: String,
        /// The bound, in bytes, which the value must stay below.
        limit: u64,
    },
}

/// Parses a byte size: a whole or decimal number and an optional binary (KiB, MiB, GiB, TiB) or
/// decimal (KB, MB, GB, TB) unit, case-insensitive; `K`, `M`, `G` alone are binary.
///
/// ```
/// use cachet::units::parse_size;
/// assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
/// assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
/// assert!(parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    parse_size_parts(text).map(|(bytes, _)| bytes)
}

/// [`parse_size`] for a setting with bounds: at least `min` bytes and, when `limit` is given,
/// less than `limit`. A bare number is bytes, as in [`parse_size`] (and as in nginx and Varnish);
/// one too small to be meant as bytes (`capacity = 64`) is refused with a message that says the
/// unit assumed and suggests the same number with a unit.
///
/// ```
/// use cachet::units::parse_size_within;
/// assert_eq!(parse_size_within("2MiB", 1 << 20, None).unwrap(), 2 << 20);
/// let e = parse_size_within("64", 1 << 20, None).unwrap_err().to_string();
/// assert!(e.contains("64 bytes") && e.contains("64MiB"), "{e}");
/// ```
pub fn parse_size_within(text: &str, min: u64, limit: Option<u64>) -> Result<u64, UnitError> {
    let (bytes, number) = parse_size_parts(text)?;
    let t = text.trim();
    let fits = |b: f64| b >= min as f64 && limit.is_none_or(|l| b < l as f64);
    if bytes < min {
        let unitless = number.len() == t.len();
        // A small bare number was most likely meant in a larger unit; suggest the units (up to
        // two) that make it fit. Past 1023 it reads as a count of bytes, and 0 as nothing.
        let suggestion = number
            .parse::<f64>()
            .ok()
            .filter(|n| unitless && *n > 0.0 && *n < 1024.0)
            .map(|n| {
                [("KiB", 1u64 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
                    .iter()
                    .filter(|(_, size)| fits(n * *size as f64))
                    .take(2)
                    .map(|(unit, _)| format!("{number}{unit}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            })
            .filter(|s| !s.is_empty());
        return Err(UnitError::TooSmall {
            text: t.to_string(),
            min,
            unitless,
            suggestion,
        });
    }
    if let Some(limit) = limit.filter(|l| bytes >= *l) {
        return Err(UnitError::TooLarge {
            text: t.to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// The bytes of a size, and the number as written (without its unit).
fn parse_size_parts(text: &str) -> Result<(u64, &str), UnitError> {
    let err = || UnitError::Size(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(err()),
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok((bytes.round() as u64, number))
}

/// Parses a duration such as `200ms`, `1.5s`, `10s`, `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        // `try_`: a number too large for a Duration (1e20) is an error, not a panic.
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| UnitError::Duration(text.to_string()));
    }
    if let Some(secs) = t.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        if !t.ends_with("ms") {
            return Duration::try_from_secs_f64(secs)
                .map_err(|_| UnitError::Duration(text.to_string()));
        }
    }
    humantime::parse_duration(t).map_err(|_| UnitError::Duration(text.to_string()))
}

/// Formats a byte count the way users type it back (`64MiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{name}", bytes / size);
        }
    }
    for (name, size) in UNITS {
        if bytes >= size {
            return format!("{:.1}{name}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4kib").unwrap(), 4096);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1MiB").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn bounded_sizes_say_a_bare_number_is_bytes() {
        const MIB: u64 = 1 << 20;
        assert_eq!(parse_size_within("1MiB", MIB, None).unwrap(), MIB);
        assert_eq!(parse_size_within("1048576", MIB, None).unwrap(), MIB);
        let e = parse_size_within("64", MIB, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "64 bytes is below the minimum of 1MiB (a number without a unit is bytes): \
             write a unit, e.g. 64MiB or 64GiB"
        );
        let e = parse_size_within(" 8 ", 1 << 10, None)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("e.g. 8KiB or 8MiB"), "{e}");
        let e = parse_size_within("0.5", MIB, None).unwrap_err().to_string();
        assert!(e.ends_with("e.g. 0.5GiB"), "{e}");
        // A large bare number reads as bytes: no unit is suggested; nor for zero.
        let e = parse_size_within("4096", MIB, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "4096 bytes is below the minimum of 1MiB (a number without a unit is bytes)"
        );
        assert!(!parse_size_within("0", MIB, None)
            .unwrap_err()
            .to_string()
            .contains("e.g."));
        let e = parse_size_within("64KiB", MIB, None).unwrap_err();
        assert_eq!(e.to_string(), "64KiB is below the minimum of 1MiB");
        // Suggestions stay below the limit.
        let e = parse_size_within("4", 8 << 10, Some(4 << 30))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("e.g. 4MiB"), "{e}");
        let e = parse_size_within("4GiB", 8 << 10, Some(4 << 30)).unwrap_err();
        assert_eq!(e.to_string(), "4GiB is too large: must be less than 4GiB");
        assert!(matches!(
            parse_size_within("lots", MIB, None),
            Err(UnitError::Size(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        for huge in ["1e20", "1e20s", "inf", "NaN", "-1"] {
            assert!(parse_duration(huge).is_err(), "{huge}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1536), "1.5KiB");
        assert_eq!(format_size(12), "12B");
    }
}
