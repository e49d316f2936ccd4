//! What a section's keys are and what they default to, for `seglog config check` and
//! `seglog config show`. Each crate describes its own section with [`SectionSpec::new`]; the
//! key names come from the section struct itself ([`fields`]), so a new field cannot be
//! missing from `config show`.
use std::time::Duration;

use crate::{parse_section, ConfigError, Section};

/// What a key is when no layer sets it.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// A fixed built-in value.
    Value(toml::Value),
    /// A value that depends on the machine or the user running seglog (the default log
    /// directory); `note` says on what.
    Machine {
        /// The value here and now.
        value: toml::Value,
        /// On what it depends, e.g. "for this user".
        note: &'static str,
    },
    /// Computed from another key's effective value.
    Derived {
        /// The value computed from the effective configuration.
        value: toml::Value,
        /// The key it is derived from (same section).
        from: &'static str,
    },
    /// No value: what the key enables is off until it is set.
    Unset,
}

impl DefaultValue {
    /// The value, if there is one.
    pub fn value(&self) -> Option<&toml::Value> {
        match self {
            DefaultValue::Value(v)
            | DefaultValue::Machine { value: v, .. }
            | DefaultValue::Derived { value: v, .. } => Some(v),
            DefaultValue::Unset => None,
        }
    }
}

/// One key of a section.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    /// The key as written in the file.
    pub name: &'static str,
    /// What it is when no layer sets it.
    pub default: DefaultValue,
    /// Whether its value is a secret (shown as "(set)", never in clear).
    pub secret: bool,
}

/// Checks one layer's table for section `T`: unknown keys and wrong types.
pub type ParseFn = fn(&toml::Table) -> Result<(), ConfigError>;

/// A section as `config check` and `config show` see it.
#[derive(Debug, Clone)]
pub struct SectionSpec {
    /// The top-level table name.
    pub name: &'static str,
    /// Its keys in the order of the section struct; `None` when this build does not know
    /// them (the device build has no collector).
    pub keys: Option<Vec<KeySpec>>,
    /// The section's strict parser, run on each layer on its own (`None`: keys unknown).
    pub parse: Option<ParseFn>,
}

/// Section `T`'s strict parser as a [`ParseFn`]: parses `[T::NAME]` of one layer's table.
pub fn parse_only<T: Section>(table: &toml::Table) -> Result<(), ConfigError> {
    parse_section::<T>(table).map(drop)
}

impl SectionSpec {
    /// Describes section `T`: its keys are `T`'s fields, in order; `defaults` gives what
    /// each defaults to (a key left out defaults to [`DefaultValue::Unset`]); `secrets` are
    /// the keys whose values are never shown.
    pub fn new<T: Section>(
        defaults: Vec<(&'static str, DefaultValue)>,
        secrets: &[&'static str],
    ) -> SectionSpec {
        let keys = fields::<T>()
            .iter()
            .map(|&name| KeySpec {
                name,
                default: defaults
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map_or(DefaultValue::Unset, |(_, d)| d.clone()),
                secret: secrets.contains(&name),
            })
            .collect();
        SectionSpec {
            name: T::NAME,
            keys: Some(keys),
            parse: Some(parse_only::<T>),
        }
    }

    /// A section this build knows by name only.
    pub fn unknown_keys(name: &'static str) -> SectionSpec {
        SectionSpec {
            name,
            keys: None,
            parse: None,
        }
    }

    /// The spec of `key`.
    pub fn key(&self, key: &str) -> Option<&KeySpec> {
        self.keys.as_ref()?.iter().find(|k| k.name == key)
    }

    /// A config file that sets every key with a default to that default (`[name]` and one
    /// line per key), and the keys left out because they have none. Parsed, it must give the
    /// built-in configuration: each section's tests check that its spec tells the truth.
    pub fn defaults_document(&self) -> (String, Vec<&'static str>) {
        let mut table = toml::Table::new();
        let mut unset = Vec::new();
        for k in self.keys.iter().flatten() {
            match k.default.value() {
                Some(v) => {
                    table.insert(k.name.to_owned(), v.clone());
                }
                None => unset.push(k.name),
            }
        }
        let mut doc = toml::Table::new();
        doc.insert(self.name.to_owned(), toml::Value::Table(table));
        (doc.to_string(), unset)
    }
}

/// The field names of a struct that derives `Deserialize` (the keys of a section), in
/// declaration order; empty for anything that is not a struct.
pub fn fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    let mut grab = FieldGrabber(None);
    // The grabber fails every call once it has the names; the result does not matter.
    let _ = T::deserialize(&mut grab);
    grab.0.unwrap_or(&[])
}

struct FieldGrabber(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names taken")
    }
}
impl std::error::Error for Stop {}
impl serde::de::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for &mut FieldGrabber {
    type Error = Stop;
    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }
    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(fields);
        Err(Stop)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A size as seglog writes it: `"16MiB"` when it is a whole number of KiB, MiB, GiB or TiB,
/// else an integer number of bytes.
pub fn size_value(bytes: u64) -> toml::Value {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return toml::Value::String(format!("{}{unit}", bytes >> shift));
        }
    }
    toml::Value::Integer(i64::try_from(bytes).unwrap_or(i64::MAX))
}

/// A duration as seglog writes it: the largest of `d`, `h`, `m`, `s`, `ms` that divides it
/// exactly (`"30d"`, `"15m"`, `"250ms"`, `"0s"`).
pub fn duration_value(d: Duration) -> toml::Value {
    let ms = d.as_millis();
    let text = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ]
    .iter()
    .find(|(unit, _)| ms != 0 && ms.is_multiple_of(*unit))
    .map_or_else(
        || {
            if ms == 0 {
                "0s".to_owned()
            } else {
                format!("{ms}ms")
            }
        },
        |(unit, name)| format!("{}{name}", ms / unit),
    );
    toml::Value::String(text)
}

/// A string value.
pub fn string_value(s: impl Into<String>) -> toml::Value {
    toml::Value::String(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DurationValue, SizeValue};

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct S {
        b: Option<u32>,
        a: Option<String>,
    }
    impl Section for S {
        const NAME: &'static str = "s";
    }

    #[test]
    fn fields_are_the_struct_fields_in_order() {
        assert_eq!(fields::<S>(), ["b", "a"]);
        assert!(fields::<u32>().is_empty());
        let spec = SectionSpec::new::<S>(
            vec![("b", DefaultValue::Value(toml::Value::Integer(3)))],
            &["a"],
        );
        let keys = spec.keys.as_ref().unwrap();
        assert_eq!(keys[0].default.value(), Some(&toml::Value::Integer(3)));
        assert_eq!(keys[1].default, DefaultValue::Unset);
        assert!(keys[1].secret && !keys[0].secret);
        let mut bad = toml::Table::new();
        bad.insert("s".into(), toml::toml! { c = 1 }.into());
        let e = (spec.parse.unwrap())(&bad).unwrap_err().to_string();
        assert!(e.contains("[s].c"), "{e}");
    }

    #[test]
    fn sizes_and_durations_are_written_so_they_read_back() {
        for (b, text) in [
            (16u64 << 20, "\"16MiB\""),
            (64 << 10, "\"64KiB\""),
            (3 << 30, "\"3GiB\""),
            (5000, "5000"),
            (0, "0"),
        ] {
            let v = size_value(b);
            assert_eq!(v.to_string(), text);
            let back: SizeValue = v.try_into().unwrap();
            assert_eq!(back.bytes(), Some(b));
        }
        for (d, text) in [
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0s"),
        ] {
            let v = duration_value(d);
            assert_eq!(v.as_str(), Some(text));
            let back: DurationValue = v.try_into().unwrap();
            assert_eq!(back.get(), d);
        }
    }
}
