//! Parameters chosen by a tag (`type: linear, steps: 10`, `sampler: ddim, eta: 0`,
//! `name: gmm, std: 0.2`) read straight from the YAML parser.
//!
//! serde's `#[serde(tag = ..)]` and `#[serde(flatten)]` first copy the whole mapping
//! into a buffer, and an error found in the buffer has lost its key and its place: a
//! negative `steps` read `p.yaml:12:12: stages.linear: invalid value` instead of
//! `p.yaml:12:55: stages.linear.params.steps: ...`. Here the tag is read first and
//! every entry after it goes to the chosen variant as the parser meets it, so the
//! parser's own path and line/column stay on every error. Entries written before the
//! tag (rare: the tag comes first in every pipeline of this project) are buffered and
//! still name their key.

use std::marker::PhantomData;

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, Error as _, IntoDeserializer, MapAccess,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;

use crate::choices::expected_one_of;

/// A type chosen by one key of its mapping.
pub trait Tagged<'de>: Sized {
    /// The key that names the variant (`type`, `arch`, `sampler`, `name`).
    const TAG: &'static str;
    /// Its valid values, in the order errors and `runner list` give them.
    fn names() -> Vec<&'static str>;
    /// Reads variant `name` (one of [`Tagged::names`]) from the rest of the mapping:
    /// `rest` answers `deserialize_enum` with `name` as the variant, and
    /// `deserialize_struct`/`deserialize_map` with the remaining entries.
    fn variant<D: Deserializer<'de>>(name: &str, rest: D) -> Result<Self, D::Error>;
}

/// Fields of an enclosing struct written in the same mapping as the variant's own
/// (what `#[serde(flatten)]` would read): `n` and `seed` beside a sampler's settings.
pub trait Shared<'de>: Default {
    /// The keys this struct takes; every other key goes to the variant.
    const FIELDS: &'static [&'static str];
    /// Reads the value of `key` (one of [`Shared::FIELDS`]) from `map`.
    fn take<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

/// No enclosing fields.
impl<'de> Shared<'de> for () {
    const FIELDS: &'static [&'static str] = &[];
    fn take<A: MapAccess<'de>>(&mut self, _: &str, _: &mut A) -> Result<(), A::Error> {
        Ok(())
    }
}

/// Reads `slot`'s value from `map`, refusing a key written twice.
pub fn take_once<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    key: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(A::Error::duplicate_field(key));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// Reads a `T` chosen by its tag, with the enclosing struct's fields `S`.
pub fn deserialize<'de, D, T, S>(d: D) -> Result<(T, S), D::Error>
where
    D: Deserializer<'de>,
    T: Tagged<'de>,
    S: Shared<'de>,
{
    d.deserialize_map(TagVisitor::<T, S>(PhantomData))
}

/// Marks the key of an entry written before the tag inside an error message: the
/// parser's path stops at the mapping, and [`join_key`] writes the key onto it.
const KEY_MARK: char = '\u{1f}';

/// A parser message `path: <mark>key<mark>message` as `path.key: message` (see
/// [`KEY_MARK`]); other messages unchanged.
pub fn join_key(message: &str) -> String {
    let Some(start) = message.find(KEY_MARK) else {
        return message.to_string();
    };
    let rest = &message[start + KEY_MARK.len_utf8()..];
    let Some(end) = rest.find(KEY_MARK) else {
        return message.to_string();
    };
    let path = message[..start].trim_end().trim_end_matches(':');
    let key = &rest[..end];
    let tail = &rest[end + KEY_MARK.len_utf8()..];
    if path.is_empty() {
        format!("{key}: {tail}")
    } else {
        format!("{path}.{key}: {tail}")
    }
}

struct TagVisitor<T, S>(PhantomData<(T, S)>);

impl<'de, T: Tagged<'de>, S: Shared<'de>> Visitor<'de> for TagVisitor<T, S> {
    type Value = (T, S);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a mapping with `{}`", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(T, S), A::Error> {
        let mut shared = S::default();
        let mut early = Vec::new();
        let names = T::names();
        let name = loop {
            let Some(key) = map.next_key::<String>()? else {
                return Err(A::Error::missing_field(T::TAG));
            };
            if key == T::TAG {
                break map.next_value_seed(NameSeed(&names))?;
            }
            if S::FIELDS.contains(&key.as_str()) {
                shared.take(&key, &mut map)?;
            } else {
                early.push((key, map.next_value::<serde_norway::Value>()?));
            }
        };
        let rest = Rest {
            name: &name,
            map: Entries {
                map,
                early: early.into_iter(),
                pending: None,
                fields: None,
                shared: &mut shared,
                tag: T::TAG,
            },
        };
        let value = T::variant(&name, rest)?;
        Ok((value, shared))
    }
}

/// The tag's value, checked against the names where it is written.
struct NameSeed<'a>(&'a [&'static str]);

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "one of {}", self.0.join(", "))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.0.contains(&v) {
            Ok(v.to_string())
        } else {
            Err(E::custom(format!(
                "unknown variant `{v}`, {}",
                expected_one_of(self.0)
            )))
        }
    }
}

/// The mapping after its tag, as a deserializer for the variant.
struct Rest<'n, 's, A, S> {
    name: &'n str,
    map: Entries<'s, A, S>,
}

impl<'de, A: MapAccess<'de>, S: Shared<'de>> Deserializer<'de> for Rest<'_, '_, A, S> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.map)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.map.fields = Some(fields);
        visitor.visit_map(self.map)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>, S: Shared<'de>> EnumAccess<'de> for Rest<'_, '_, A, S> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), A::Error> {
        let name: StrDeserializer<A::Error> = self.name.into_deserializer();
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de, A: MapAccess<'de>, S: Shared<'de>> VariantAccess<'de> for Rest<'_, '_, A, S> {
    type Error = A::Error;

    fn unit_variant(mut self) -> Result<(), A::Error> {
        self.map.fields = Some(&[]);
        while self.map.next_key::<de::IgnoredAny>()?.is_some() {
            self.map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, A::Error> {
        Err(A::Error::custom("a tagged mapping cannot hold a tuple"))
    }

    fn struct_variant<V: Visitor<'de>>(
        mut self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.map.fields = Some(fields);
        visitor.visit_map(self.map)
    }
}

/// The entries after the tag: those written before it first (buffered), then the
/// parser's own; the enclosing struct's keys are taken out on the way.
struct Entries<'s, A, S> {
    map: A,
    early: std::vec::IntoIter<(String, serde_norway::Value)>,
    /// The buffered value whose key was just handed out.
    pending: Option<(String, serde_norway::Value)>,
    /// The variant's keys, when it said (a struct); others are unknown fields.
    fields: Option<&'static [&'static str]>,
    shared: &'s mut S,
    tag: &'static str,
}

/// `Ok(())` when `key` belongs to the variant (of `fields`, when known), else the
/// error that lists every key the mapping takes.
fn check_key<E: de::Error>(
    fields: Option<&[&str]>,
    shared: &[&str],
    tag: &str,
    key: &str,
) -> Result<(), E> {
    if key == tag {
        return Err(E::custom(format!("duplicate field `{tag}`")));
    }
    match fields {
        Some(fields) if !fields.contains(&key) => {
            let all: Vec<&str> = fields.iter().chain(shared).copied().collect();
            Err(E::custom(format!(
                "unknown field `{key}`, {}",
                expected_one_of(&all)
            )))
        }
        _ => Ok(()),
    }
}

impl<'de, A: MapAccess<'de>, S: Shared<'de>> MapAccess<'de> for Entries<'_, A, S> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some((key, value)) = self.early.next() {
            check_key::<A::Error>(self.fields, S::FIELDS, self.tag, &key)?;
            let name: StrDeserializer<A::Error> = key.as_str().into_deserializer();
            let out = seed.deserialize(name)?;
            self.pending = Some((key, value));
            return Ok(Some(out));
        }
        let mut seed = seed;
        loop {
            let probe = KeyProbe {
                seed,
                fields: self.fields,
                shared: S::FIELDS,
                tag: self.tag,
            };
            match self.map.next_key_seed(probe)? {
                None => return Ok(None),
                Some(Probed::Variant(key)) => return Ok(Some(key)),
                Some(Probed::Shared(key, back)) => {
                    self.shared.take(key, &mut self.map)?;
                    seed = back;
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.pending.take() {
            Some((key, value)) => seed
                .deserialize(value)
                .map_err(|e| A::Error::custom(format!("{KEY_MARK}{key}{KEY_MARK}{e}"))),
            None => self.map.next_value_seed(seed),
        }
    }
}

/// A key as the parser reads it: the enclosing struct's (handed back with the seed),
/// or the variant's (read by the seed while the parser still knows where it is).
enum Probed<V, K> {
    Variant(V),
    Shared(&'static str, K),
}

struct KeyProbe<K> {
    seed: K,
    fields: Option<&'static [&'static str]>,
    shared: &'static [&'static str],
    tag: &'static str,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeyProbe<K> {
    type Value = Probed<K::Value, K>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeyProbe<K> {
    type Value = Probed<K::Value, K>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if let Some(&shared) = self.shared.iter().find(|&&s| s == key) {
            return Ok(Probed::Shared(shared, self.seed));
        }
        check_key::<E>(self.fields, self.shared, self.tag, key)?;
        let name: StrDeserializer<E> = key.into_deserializer();
        self.seed.deserialize(name).map(Probed::Variant)
    }
}

/// Declares an enum chosen by a tag: serde writes it internally tagged (`{ tag: name,
/// ..fields }`, as keys and JSON files store it) and reads it through [`deserialize`],
/// so errors keep their key and place. `NAMES` must list the variants' snake-case
/// names in order; [`serde_variants`] lets a test check it.
macro_rules! tagged_enum {
    (
        #[tag = $tag:literal, remote = $remote:literal]
        $(#[$meta:meta])*
        $vis:vis enum $name:ident $body:tt
    ) => {
        #[derive(serde::Serialize, schemars::JsonSchema)]
        #[serde(tag = $tag, rename_all = "snake_case")]
        $(#[$meta])*
        $vis enum $name $body

        const _: () = {
            /// The same variants externally tagged: what [`Rest`] feeds.
            #[allow(dead_code)]
            #[derive(serde::Deserialize)]
            #[serde(remote = $remote, rename_all = "snake_case", deny_unknown_fields)]
            enum Written $body

            impl<'de> $crate::tagged::Tagged<'de> for $name {
                const TAG: &'static str = $tag;
                fn names() -> Vec<&'static str> {
                    $name::NAMES.to_vec()
                }
                fn variant<D: serde::Deserializer<'de>>(
                    _: &str,
                    rest: D,
                ) -> ::std::result::Result<Self, D::Error> {
                    Written::deserialize(rest)
                }
            }

            impl<'de> serde::Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                    $crate::tagged::deserialize::<D, $name, ()>(d).map(|(v, ())| v)
                }
            }
        };
    };
}

pub(crate) use tagged_enum;

/// The variant names serde itself knows for `T` (from its unknown-variant message),
/// so a test can hold [`Tagged::names`] to them.
pub fn serde_variants<T: for<'de> Tagged<'de>>() -> Vec<String> {
    let none = de::value::MapDeserializer::<_, de::value::Error>::new(std::iter::empty::<(
        String,
        String,
    )>());
    let mut nothing = ();
    let rest = Rest {
        name: "\u{0}",
        map: Entries {
            map: none,
            early: Vec::new().into_iter(),
            pending: None,
            fields: None,
            shared: &mut nothing,
            tag: T::TAG,
        },
    };
    let message = match T::variant("\u{0}", rest) {
        Ok(_) => return Vec::new(),
        Err(e) => e.to_string(),
    };
    message
        .split('`')
        .skip(3)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Ddim {
        #[serde(default)]
        eta: f64,
        #[serde(default)]
        steps: Option<usize>,
    }

    tagged_enum! {
        #[tag = "sampler", remote = "Sampler"]
        #[derive(Debug, PartialEq)]
        enum Sampler {
            Ddim(Ddim),
            Linear { steps: usize },
            Exact {},
        }
    }

    impl Sampler {
        const NAMES: &'static [&'static str] = &["ddim", "linear", "exact"];
    }

    #[derive(Debug, Default, PartialEq)]
    struct Common {
        n: Option<usize>,
        seed: Option<u64>,
    }

    impl<'de> Shared<'de> for Common {
        const FIELDS: &'static [&'static str] = &["n", "seed"];
        fn take<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                "n" => take_once(&mut self.n, "n", map),
                _ => take_once(&mut self.seed, "seed", map),
            }
        }
    }

    #[derive(Debug, PartialEq)]
    struct Stage(Sampler, Common);

    impl<'de> Deserialize<'de> for Stage {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stage, D::Error> {
            deserialize::<D, Sampler, Common>(d).map(|(s, c)| Stage(s, c))
        }
    }

    #[derive(Debug, Deserialize)]
    struct File {
        #[allow(dead_code)]
        params: Stage,
    }

    fn error(yaml: &str) -> String {
        join_key(
            &serde_norway::from_str::<File>(yaml)
                .unwrap_err()
                .to_string(),
        )
    }

    #[test]
    fn variants_and_shared_fields_are_read_in_any_order() {
        let read = |yaml: &str| serde_norway::from_str::<Stage>(yaml).unwrap();
        let common = Common {
            n: Some(5),
            seed: Some(2),
        };
        let ddim = Sampler::Ddim(Ddim {
            eta: 0.5,
            steps: None,
        });
        assert_eq!(
            read("{ sampler: ddim, n: 5, eta: 0.5, seed: 2 }"),
            Stage(ddim, common)
        );
        let early = read("{ eta: 1.0, seed: 2, sampler: ddim, n: 5 }");
        assert_eq!(
            early.0,
            Sampler::Ddim(Ddim {
                eta: 1.0,
                steps: None
            })
        );
        assert_eq!(early.1.seed, Some(2));
        assert_eq!(
            read("{ sampler: linear, steps: 3 }").0,
            Sampler::Linear { steps: 3 }
        );
        assert_eq!(read("{ sampler: exact }").0, Sampler::Exact {});
        // Written back internally tagged, as before.
        assert_eq!(
            serde_json::to_string(&Sampler::Linear { steps: 3 }).unwrap(),
            r#"{"sampler":"linear","steps":3}"#
        );
    }

    #[test]
    fn errors_name_the_full_key_and_its_place() {
        assert_eq!(
            error("params: { sampler: linear, steps: -5 }"),
            "params.steps: invalid type: integer `-5`, expected usize at line 1 column 35"
        );
        assert_eq!(
            error("params: { sampler: ddim, eta: x }"),
            "params.eta: invalid type: string \"x\", expected f64 at line 1 column 31"
        );
        assert_eq!(
            error("params: { sampler: ddim, n: -1 }"),
            "params.n: invalid type: integer `-1`, expected usize at line 1 column 29"
        );
        assert_eq!(
            error("params: { sampler: ddmi }"),
            "params.sampler: unknown variant `ddmi`, expected one of `ddim`, `linear`, `exact` at line 1 column 20"
        );
        assert_eq!(
            error("params: { sampler: ddim, etta: 1 }"),
            "params: unknown field `etta`, expected one of `eta`, `steps`, `n`, `seed` at line 1 column 26"
        );
        assert_eq!(
            error("params: { sampler: exact, foo: 1 }"),
            "params: unknown field `foo`, expected `n` or `seed` at line 1 column 27"
        );
        assert!(error("params: { n: 1 }").starts_with("params: missing field `sampler`"));
        assert!(
            error("params: { sampler: ddim, sampler: ddim }").contains("duplicate field `sampler`")
        );
        assert!(error("params: { sampler: ddim, n: 1, n: 2 }").contains("duplicate field `n`"));
        // Before the tag the parser's path stops at the mapping; the key is still named.
        assert!(
            error("params: { eta: x, sampler: ddim }")
                .starts_with("params.eta: invalid type: string \"x\", expected f64"),
            "{}",
            error("params: { eta: x, sampler: ddim }")
        );
        assert!(
            error("params: { etta: 1, sampler: ddim }").contains("unknown field `etta`"),
            "{}",
            error("params: { etta: 1, sampler: ddim }")
        );
    }

    #[test]
    fn serde_variants_reads_what_the_derive_knows() {
        assert_eq!(serde_variants::<Sampler>(), Sampler::NAMES);
    }
}
