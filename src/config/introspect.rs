//! The key names a serde struct accepts, read from its derive: the
//! derived `Deserialize` hands its field list to `deserialize_struct`, so a
//! deserializer that stops right there learns it without any input. Used
//! for the "expected one of" part of unknown-key errors, so those lists
//! cannot drift from the structs.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The fields of `T` (empty for a type that is not a plain struct: one
/// that flattens another asks for a map instead and lists its keys itself).
pub fn fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    let mut out = Vec::new();
    // The "error" is the expected way out: nothing is deserialized.
    let _ = T::deserialize(Fields(&mut out));
    out
}

struct Fields<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names read")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for Fields<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Common, Kind, Storage};

    #[test]
    fn reads_a_plain_structs_fields_in_order() {
        let common = fields::<Common>();
        assert_eq!(common.first(), Some(&"schedule"));
        assert!(common.contains(&"retries") && common.contains(&"alerts"));
        assert!(fields::<Storage>().contains(&"repository"));
        // Not a struct: nothing, never a panic.
        assert!(fields::<String>().is_empty());
    }

    /// The least each kind needs to parse (serde reports a missing key
    /// before an unknown one in a flattened struct).
    fn minimal(kind: &str) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("type".into(), kind.into());
        let arr = |v: &str| toml::Value::Array(vec![v.into()]);
        match kind {
            "postgres" | "redis" | "postgres_physical" => {
                t.insert("repository".into(), "r".into());
            }
            "files" => {
                t.insert("repository".into(), "r".into());
                t.insert("paths".into(), arr("/etc"));
            }
            "prune_files" => {
                t.insert("paths".into(), arr("/var/log/*.log"));
            }
            "disk" => {
                t.insert("mounts".into(), arr("/"));
            }
            "health" => {
                t.insert("checks".into(), toml::Value::Array(vec![]));
            }
            _ => {}
        }
        t
    }

    /// Every key a kind lists is one its parser takes (set to a table no
    /// key accepts, the error is about its value, never "unknown field"),
    /// and a key it does not list is refused by name.
    #[test]
    fn every_listed_kind_key_is_accepted_by_its_parser() {
        use crate::config::JobConfig;
        for name in Kind::NAMES {
            let base = minimal(name);
            toml::Value::Table(base.clone())
                .try_into::<JobConfig>()
                .unwrap_or_else(|e| panic!("minimal {name}: {e}"));
            let keys = Kind::keys_of(name).expect("registered");
            assert!(!keys.is_empty(), "{name} lists no keys");
            for key in keys {
                let mut t = base.clone();
                let mut odd = toml::Table::new();
                odd.insert("no_such_key".into(), toml::Value::Array(vec![]));
                t.insert(key.into(), toml::Value::Table(odd));
                if let Err(e) = toml::Value::Table(t).try_into::<JobConfig>() {
                    let msg = e.to_string();
                    assert!(
                        !msg.contains(&format!("unknown field `{key}`")),
                        "{name}.{key} is listed but unknown to the parser: {msg}"
                    );
                }
            }
            let mut t = base.clone();
            t.insert("no_such_key".into(), 1.into());
            let err = toml::Value::Table(t)
                .try_into::<JobConfig>()
                .expect_err("an unknown key");
            assert!(
                err.to_string().contains("unknown field `no_such_key`"),
                "{name}: {err}"
            );
        }
    }
}
