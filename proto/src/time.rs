//! Wire timestamps (UTC) and their conversion to and from chrono.

use crate::pb::Timestamp;
use chrono::{DateTime, Utc};

/// A wire timestamp for a UTC instant.
pub fn to_wire(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The UTC instant of a wire timestamp, or `None` if it is out of range.
pub fn from_wire(t: &Timestamp) -> Option<DateTime<Utc>> {
    if t.nanos < 0 || t.nanos >= 1_000_000_000 {
        return None;
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let now = Utc::now();
        assert_eq!(from_wire(&to_wire(now)), Some(now));
        assert_eq!(
            from_wire(&Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
    }
}
