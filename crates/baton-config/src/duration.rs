//! Durations in config: whole seconds (`90`) or a number with a unit (`"500ms"`, `"30s"`,
//! `"30m"`, `"2h"`).

use std::time::Duration;

pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 90, \"30s\" or \"30m\""))?;
    let seconds = |factor: u64| Duration::from_secs(number.saturating_mul(factor));
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(seconds(1)),
        "m" | "min" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        other => Err(format!(
            "unknown duration unit `{other}` (use ms, s, m or h)"
        )),
    }
}

pub(crate) mod option {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Unexpected, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_any(DurationVisitor).map(Some)
    }

    /// Seconds or a string with a unit; anything else is an error that says what was given
    /// (an untagged enum would only say "data did not match any variant").
    struct DurationVisitor;

    impl DurationVisitor {
        fn got<E: de::Error>(&self, given: Unexpected<'_>) -> Result<Duration, E> {
            Err(E::custom(format_args!(
                "expected seconds (90) or a duration such as \"30s\" or \"30m\", got {given}"
            )))
        }
    }

    impl<'de> Visitor<'de> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("seconds (90) or a duration such as \"30s\" or \"30m\"")
        }

        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(seconds))
        }

        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
            match u64::try_from(seconds) {
                Ok(seconds) => Ok(Duration::from_secs(seconds)),
                Err(_) => self.got(Unexpected::Signed(seconds)),
            }
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse(text).map_err(E::custom)
        }

        fn visit_bool<E: de::Error>(self, value: bool) -> Result<Duration, E> {
            self.got(Unexpected::Bool(value))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
            self.got(Unexpected::Float(value))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Duration, A::Error> {
            self.got(Unexpected::Seq)
        }

        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Duration, A::Error> {
            self.got(Unexpected::Map)
        }
    }

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&format!("{}ms", duration.as_millis())),
            None => serializer.serialize_none(),
        }
    }
}
