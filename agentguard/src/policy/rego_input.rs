//! The event as a Rego `input` value, built without JSON text.
//!
//! A serde `Serializer` that produces `regorus::Value` straight from the
//! event's `Serialize` impl, so the value has exactly the shape of the JSON
//! that `agentguard events` prints (fields added to the event appear by
//! themselves), without printing and re-parsing it. The identity (most of
//! an event's size) is the same for every event of a process, so its value
//! is cached.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use regorus::Value;
use serde::ser::{self, Serialize};

use crate::event::Event;
use crate::identity::resolver::Identity;

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Any `Serialize` value as a regorus value (JSON data model).
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, Error> {
    v.serialize(ValueSerializer { skip: None })
}

/// Identities whose value is kept (then the cache starts over).
const CACHE: usize = 4096;

/// Builds inputs, caching identity values: every event of a process carries
/// the same identity (container, agent, ancestry), which is most of the
/// input, so it is built once and shared (regorus values are `Arc`s).
#[derive(Default)]
pub struct InputBuilder {
    identities: Mutex<HashMap<u64, (Identity, Value)>>,
}

/// Cheap key: the acting pid and container id pick the entry; equality of
/// the whole identity confirms it (Arc fields compare by pointer first).
fn id_key(id: &Identity) -> u64 {
    let mut h = DefaultHasher::new();
    id.ancestry.first().map(|a| a.pid).hash(&mut h);
    id.container.as_ref().map(|c| &*c.id).hash(&mut h);
    h.finish()
}

impl InputBuilder {
    pub fn build(&self, ev: &Event) -> Result<Value, Error> {
        let Some(id) = &ev.identity else {
            return to_value(ev);
        };
        let key = id_key(id);
        let cached = self
            .identities
            .lock()
            .ok()
            .and_then(|c| c.get(&key).filter(|(i, _)| i == id).map(|(_, v)| v.clone()));
        let id_value = match cached {
            Some(v) => v,
            None => {
                let v = to_value(id)?;
                if let Ok(mut c) = self.identities.lock() {
                    if c.len() >= CACHE {
                        c.clear();
                    }
                    c.insert(key, (id.clone(), v.clone()));
                }
                v
            }
        };
        let mut v = ev.serialize(ValueSerializer {
            skip: Some(Skip::Identity),
        })?;
        if let Ok(top) = v.as_object_mut() {
            top.insert(Value::from("identity"), id_value);
        }
        Ok(v)
    }
}

/// A top-level field to leave out (filled from the cache).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    Identity,
}

impl Skip {
    fn drops(s: Option<Skip>, key: &str) -> bool {
        s == Some(Skip::Identity) && key == "identity"
    }
}

struct ValueSerializer {
    skip: Option<Skip>,
}

fn key_string(k: &Value) -> Option<&str> {
    match k {
        Value::String(s) => Some(s),
        _ => None,
    }
}

pub struct SeqBuilder(Vec<Value>);

pub struct MapBuilder {
    map: BTreeMap<Value, Value>,
    key: Option<Value>,
    skip: Option<Skip>,
    /// For struct and tuple variants: the variant name to wrap in.
    variant: Option<&'static str>,
}

pub struct TupleVariant {
    name: &'static str,
    items: Vec<Value>,
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = TupleVariant;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(Value::from(i64::from(v)))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(Value::from(i64::from(v)))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(Value::from(i64::from(v)))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(Value::from(u64::from(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(Value::from(u64::from(v)))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(Value::from(u64::from(v)))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        Ok(Value::from(f64::from(v)))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        // JSON has no NaN or infinity; serde_json writes null.
        Ok(if v.is_finite() {
            Value::from(v)
        } else {
            Value::Null
        })
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(Value::from(
            v.iter()
                .map(|b| Value::from(u64::from(*b)))
                .collect::<Vec<_>>(),
        ))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(Value::from(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<Value, Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, Error> {
        let mut map = BTreeMap::new();
        map.insert(
            Value::from(variant),
            v.serialize(ValueSerializer { skip: None })?,
        );
        Ok(Value::from(map))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder(Vec::with_capacity(len)))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder(Vec::with_capacity(len)))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<TupleVariant, Error> {
        Ok(TupleVariant {
            name: variant,
            items: Vec::with_capacity(len),
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            map: BTreeMap::new(),
            key: None,
            skip: self.skip,
            variant: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapBuilder, Error> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            map: BTreeMap::new(),
            key: None,
            skip: None,
            variant: Some(variant),
        })
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.0.push(v.serialize(ValueSerializer { skip: None })?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::from(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for TupleVariant {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.items
            .push(v.serialize(ValueSerializer { skip: None })?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        let mut map = BTreeMap::new();
        map.insert(Value::from(self.name), Value::from(self.items));
        Ok(Value::from(map))
    }
}

impl MapBuilder {
    fn entry<T: Serialize + ?Sized>(&mut self, key: Value, v: &T) -> Result<(), Error> {
        let k = key_string(&key);
        if k.is_some_and(|k| Skip::drops(self.skip, k)) {
            return Ok(());
        }
        self.map
            .insert(key, v.serialize(ValueSerializer { skip: None })?);
        Ok(())
    }

    fn finish(self) -> Value {
        let v = Value::from(self.map);
        match self.variant {
            Some(name) => {
                let mut outer = BTreeMap::new();
                outer.insert(Value::from(name), v);
                Value::from(outer)
            }
            None => v,
        }
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        // JSON object keys are strings: numbers and the like are written as
        // their text, as serde_json does.
        let key = match k.serialize(ValueSerializer { skip: None })? {
            s @ Value::String(_) => s,
            other => Value::from(other.to_string().trim_matches('"').to_owned()),
        };
        self.key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("map value without a key".into()))?;
        self.entry(key, v)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.entry(Value::from(key), v)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.entry(Value::from(key), v)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(self.finish())
    }
}
