//! Internally tagged JSON (`{"type":"deposit","key":…}`) decoded without buffering.
//!
//! serde's derive for `#[serde(tag = "type")]` enums cannot know where the tag is, so it
//! first copies the whole object into an intermediate tree (every string allocated, every
//! nested request and operation too) and only then builds the value: under load most of
//! a node's decoding time went there. Every encoder in this crate writes `type` first,
//! so [`decode`] reads the tag, then hands the rest of the object straight to a decoder
//! for that variant. An object whose tag comes later, or a variant without a fast decoder,
//! takes the slow path: the object is collected into a [`serde_json::Value`] and decoded
//! by the derived implementation, so every input is accepted or refused exactly as before.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::marker::PhantomData;

/// An internally tagged type with a fast decoder for some of its tags.
pub trait Tagged: Sized {
    /// What the decoder expects, for error messages.
    const EXPECTING: &'static str;
    /// The rest of the object after `"type": tag`, or `None` for a tag left to [`Tagged::slow`].
    fn fast<'de, A: MapAccess<'de>>(tag: &str, map: &mut A) -> Option<Result<Self, A::Error>>;
    /// The derived decoder, on the whole object.
    fn slow(object: Value) -> Result<Self, serde_json::Error>;
}

/// Decodes a [`Tagged`] type through [`decode`].
pub fn deserialize<'de, D: Deserializer<'de>, T: Tagged>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(TaggedVisitor(PhantomData))
}

struct TaggedVisitor<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        decode(map, T::fast, T::slow)
    }
}

/// Decodes an internally tagged object from `map`: `fast` gets the tag and the rest of
/// the object when `type` comes first, and returns `None` for a tag it does not handle;
/// otherwise `slow` decodes the whole object as a JSON value.
fn decode<'de, A, T>(
    mut map: A,
    fast: impl FnOnce(&str, &mut A) -> Option<Result<T, A::Error>>,
    slow: impl FnOnce(Value) -> Result<T, serde_json::Error>,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
{
    let mut object = Map::new();
    match map.next_key::<String>()? {
        Some(key) if key == "type" => {
            let tag: String = map.next_value()?;
            if let Some(result) = fast(&tag, &mut map) {
                return result;
            }
            object.insert(key, Value::String(tag));
        }
        Some(key) => {
            let value: Value = map.next_value()?;
            object.insert(key, value);
        }
        None => {}
    }
    while let Some(key) = map.next_key::<String>()? {
        let value: Value = map.next_value()?;
        if object.insert(key.clone(), value).is_some() {
            return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
        }
    }
    slow(Value::Object(object)).map_err(de::Error::custom)
}

/// Reads the remaining fields of an object: `field` takes the ones it knows (returning
/// true), the others are skipped, as the derived decoders skip unknown fields.
pub fn fields<'de, A: MapAccess<'de>>(
    map: &mut A,
    mut field: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key::<String>()? {
        if key == "type" {
            return Err(de::Error::duplicate_field("type")); // as the derived decoders say
        }
        if !field(&key, map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// Reads the value of field `name` into `slot`; a field given twice is refused.
pub fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<bool, A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(true)
}

/// The value of a required field.
pub fn required<T, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(name))
}

/// Reads an object with the single field `name` (others skipped).
pub fn single<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    name: &'static str,
) -> Result<T, A::Error> {
    let mut slot = None;
    fields(map, |key, map| if key == name { once(map, &mut slot, name) } else { Ok(false) })?;
    required(slot, name)
}

/// Reads an object with the single field `field[0]` and no other (as
/// `deny_unknown_fields` does).
pub fn only<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    field: &'static [&'static str; 1],
) -> Result<T, A::Error> {
    let mut slot = None;
    fields(map, |key, map| match key == field[0] {
        true => once(map, &mut slot, field[0]),
        false => Err(de::Error::unknown_field(key, field)),
    })?;
    required(slot, field[0])
}
