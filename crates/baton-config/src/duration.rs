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
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(deserializer)? {
            None => Ok(None),
            Some(Raw::Seconds(seconds)) => Ok(Some(Duration::from_secs(seconds))),
            Some(Raw::Text(text)) => super::parse(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
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
