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
    let err = || UnitError::Size(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(err());
    }
    let number: f64 = number.parse().map_err(|_| err())?;
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
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration such as `200ms`, `1.5s`, `10s`, `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(UnitError::Duration(text.to_string()));
    }
    if let Some(secs) = t.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        if secs.is_finite() && secs >= 0.0 && !t.ends_with("ms") {
            return Ok(Duration::from_secs_f64(secs));
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
    fn durations() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1536), "1.5KiB");
        assert_eq!(format_size(12), "12B");
    }
}
