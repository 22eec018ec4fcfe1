//! Where in the text a value sits, for error messages. Neither parser exposes
//! positions to a deserializer, but both stamp their current position on any
//! error: so walk the document to the value and fail there on purpose.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_path_to_error::Segment;

use super::sources::Format;

/// 1-based line and column of the value at `path` in document `stream_index`
/// (or of its nearest ancestor that exists, e.g. for a missing field).
pub(super) fn position(
    text: &str,
    format: Format,
    stream_index: usize,
    path: &[Segment],
) -> Option<(usize, usize)> {
    match format {
        Format::Yaml => {
            let document = serde_yaml::Deserializer::from_str(text).nth(stream_index)?;
            let location = Walk(path).deserialize(document).err()?.location()?;
            Some((location.line(), location.column()))
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            for _ in 0..stream_index {
                IgnoredAny::deserialize(&mut de).ok()?;
            }
            let err = Walk(path).deserialize(&mut de).err()?;
            (err.line() > 0).then(|| (err.line(), err.column()))
        }
    }
}

/// Follows the remaining path; always ends in an error.
struct Walk<'a>(&'a [Segment]);

fn arrived<E: de::Error>() -> E {
    E::custom("here")
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

// Scalars fall to the default visit methods, which fail: that is arrival too.
impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the value an error was about")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Map { key }, rest)) = self.0.split_first() else {
            return Err(arrived());
        };
        while let Some(candidate) = map.next_key::<String>()? {
            if candidate == *key {
                return map.next_value_seed(Walk(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(arrived())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Seq { index }, rest)) = self.0.split_first() else {
            return Err(arrived());
        };
        for _ in 0..*index {
            seq.next_element::<IgnoredAny>()?.ok_or_else(arrived)?;
        }
        seq.next_element_seed(Walk(rest))?.ok_or_else(arrived)
    }
}
