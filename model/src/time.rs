//! Timestamps as NVCF writes them: ISO-8601 UTC with millisecond precision, e.g. `2025-11-19T22:15:29.533Z`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A UTC instant, serialized as RFC 3339 with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to milliseconds so that it round-trips through JSON exactly.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Converts any offset to UTC and truncates to milliseconds.
    pub fn from_datetime(t: OffsetDateTime) -> Self {
        let t = t.to_offset(UtcOffset::UTC);
        let ms = t.millisecond();
        Self(t.replace_millisecond(ms).unwrap_or(t))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// From milliseconds since the Unix epoch (out-of-range values clamp to the epoch).
    pub fn from_unix_millis(ms: i64) -> Self {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self(t)
    }

    /// Parses RFC 3339 (any offset, any fraction).
    pub fn parse(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(Self::from_datetime)
    }

    /// This instant plus a duration (saturating at the far future).
    #[must_use]
    pub fn plus(self, d: std::time::Duration) -> Self {
        Self::from_datetime(
            self.0
                .saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp '{s}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_round_trips() {
        let t = Timestamp::parse("2025-11-19T22:15:29.533123Z").expect("parse");
        assert_eq!(t.to_string(), "2025-11-19T22:15:29.533Z");
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        assert_eq!(Timestamp::from_unix_millis(t.unix_millis()), t);
        let off = Timestamp::parse("2025-11-19T23:15:29+01:00").expect("parse");
        assert_eq!(off.to_string(), "2025-11-19T22:15:29.000Z");
        assert!(Timestamp::parse("yesterday").is_none());
    }
}
