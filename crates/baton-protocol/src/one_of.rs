//! Deserializing a value that is one of a few fixed strings, with an error that says what was
//! given instead: `expected one of "read-only", "workspace-write", got integer `7``. serde's
//! derive says "expected unit variant" (or, in TOML, "wanted string or table") for a number,
//! which leaves a person guessing.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// Deserializes one of `names`; `from_name` maps a name to its value.
pub(crate) fn deserialize<'de, D, T>(
    deserializer: D,
    names: &'static [&'static str],
    from_name: fn(&str) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_any(OneOf {
        names,
        from_name,
        value: PhantomData,
    })
}

struct OneOf<T> {
    names: &'static [&'static str],
    from_name: fn(&str) -> Option<T>,
    value: PhantomData<T>,
}

impl<T> OneOf<T> {
    fn got<E: de::Error>(&self, given: Unexpected<'_>) -> Result<T, E> {
        Err(E::custom(format_args!("expected {self}, got {given}")))
    }
}

impl<T> fmt::Display for OneOf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one of ")?;
        for (i, name) in self.names.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{name}\"")?;
        }
        Ok(())
    }
}

impl<'de, T> Visitor<'de> for OneOf<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        match (self.from_name)(value) {
            Some(found) => Ok(found),
            None => self.got(Unexpected::Str(value)),
        }
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<T, E> {
        self.got(Unexpected::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.got(Unexpected::Signed(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        self.got(Unexpected::Unsigned(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        self.got(Unexpected::Float(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        self.got(Unexpected::Unit)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        self.got(Unexpected::Seq)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        self.got(Unexpected::Map)
    }
}
