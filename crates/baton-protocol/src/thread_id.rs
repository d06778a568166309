use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The id of a thread (a session): a UUID, v7 for threads baton creates.
///
/// A `ThreadId` can only be built by parsing a canonical UUID, so a value of this type never
/// carries path characters and is safe to put into a file name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(Uuid);

/// Why a string is not a thread id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThreadIdError {
    #[error("the thread id is empty; pass the UUID that baton printed as `thread: <id>`")]
    Empty,
    #[error(
        "`{shown}` is not a thread id: a thread id is a UUID such as 019c7616-b3e9-7782-9ea8-b53e6bb09329"
    )]
    Malformed { shown: String },
}

impl ThreadId {
    /// A new time-ordered (v7) id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id a database column holds.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// When the id was minted, for UUID v7 ids; `None` for other versions.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        let ts = self.0.get_timestamp()?;
        if self.0.get_version_num() != 7 {
            return None;
        }
        let (secs, nanos) = ts.to_unix();
        DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
    }

    /// Parses the hyphenated form only (36 characters, hex and hyphens), case-insensitively.
    pub fn parse(text: &str) -> Result<Self, ThreadIdError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ThreadIdError::Empty);
        }
        let malformed = || ThreadIdError::Malformed {
            shown: shorten_for_message(trimmed),
        };
        // Only the canonical hyphenated form: other forms Uuid accepts (braced, urn:) would
        // let odd characters through to messages and are never written by baton or Codex.
        if trimmed.len() != 36 || !trimmed.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(malformed());
        }
        Uuid::parse_str(trimmed).map(Self).map_err(|_| malformed())
    }
}

impl Default for ThreadId {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps error messages one line and short whatever the caller sent.
fn shorten_for_message(text: &str) -> String {
    const MAX: usize = 60;
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if cleaned.chars().count() <= MAX {
        cleaned
    } else {
        format!(
            "{} ({} characters)",
            crate::shorten(&cleaned, MAX),
            text.chars().count()
        )
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThreadId({self})")
    }
}

impl FromStr for ThreadId {
    type Err = ThreadIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ThreadId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ThreadId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_uuid_and_round_trips() {
        let id = ThreadId::parse("019c7616-b3e9-7782-9ea8-b53e6bb09329").expect("valid");
        assert_eq!(id.to_string(), "019c7616-b3e9-7782-9ea8-b53e6bb09329");
        assert!(id.created_at().is_some());
    }

    #[test]
    fn rejects_path_characters_and_other_forms() {
        for bad in [
            "../../etc/passwd",
            "019c7616-b3e9-7782-9ea8-b53e6bb0932/",
            "{019c7616-b3e9-7782-9ea8-b53e6bb09329}",
            "urn:uuid:019c7616-b3e9-7782-9ea8-b53e6bb09329",
            "019c7616b3e977829ea8b53e6bb09329",
            "not-a-uuid",
        ] {
            assert!(
                matches!(ThreadId::parse(bad), Err(ThreadIdError::Malformed { .. })),
                "{bad}"
            );
        }
        assert_eq!(ThreadId::parse("  "), Err(ThreadIdError::Empty));
    }

    #[test]
    fn long_input_gives_a_short_message() {
        let long = "a".repeat(5000);
        let message = ThreadId::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("5000 characters"));
    }

    #[test]
    fn new_ids_are_v7_and_time_ordered() {
        let a = ThreadId::new();
        let b = ThreadId::new();
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    proptest::proptest! {
        /// Arbitrary text never panics, and whatever parses is a canonical UUID that prints
        /// back to the same id with no path characters.
        #[test]
        fn arbitrary_text_parses_safely(text in "\\PC{0,80}") {
            if let Ok(id) = ThreadId::parse(&text) {
                let printed = id.to_string();
                proptest::prop_assert_eq!(printed.len(), 36);
                proptest::prop_assert!(printed.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
                proptest::prop_assert_eq!(ThreadId::parse(&printed), Ok(id));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = ThreadId::parse(&text);
        }

        #[test]
        fn every_uuid_round_trips(value in proptest::prelude::any::<u128>()) {
            let uuid = Uuid::from_u128(value);
            let id = ThreadId::parse(&uuid.to_string());
            proptest::prop_assert_eq!(id.map(|id| *id.as_uuid()), Ok(uuid));
        }
    }
}
