//! The serde model of the TOML file, before validation: every value keeps its span.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_spanned::Spanned;

use super::keys::{RawCache, RawDataplane, RawGlobal, RawProxy, RawResolvers};

pub(crate) type S = Spanned<String>;
pub(crate) type V = Spanned<toml::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub global: Option<Spanned<RawGlobal>>,
    pub dataplane: Option<Spanned<RawDataplane>>,
    pub announce: Option<Spanned<RawAnnounce>>,
    pub defaults: Option<Spanned<RawProxy>>,
    #[serde(default)]
    pub frontend: Sections<RawProxy>,
    #[serde(default)]
    pub backend: Sections<RawProxy>,
    #[serde(default)]
    pub listen: Sections<RawProxy>,
    #[serde(default)]
    pub resolvers: Sections<RawResolvers>,
    #[serde(default)]
    pub cache: Sections<RawCache>,
}

/// `[announce]` (see `model::Announce`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnnounce {
    pub interface: Option<S>,
    pub kind: Option<S>,
    pub frontends: Option<Spanned<List>>,
}

/// Named sections in file order.
#[derive(Debug)]
pub(crate) struct Sections<T>(pub Vec<(S, Spanned<T>)>);

impl<T> Default for Sections<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sections<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Vis<T> {
            type Value = Sections<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of named sections")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<S>()? {
                    v.push((k, m.next_value()?));
                }
                Ok(Sections(v))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

/// A directive item: HAProxy line syntax or a structured table.
#[derive(Debug)]
pub(crate) enum Item {
    Line(String),
    Table(Vec<(S, V)>),
    /// Anything else (reported by the directive that expected a line or table).
    Other,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a table")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                Ok(Item::Line(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Item, E> {
                Ok(Item::Line(v))
            }
            fn visit_i64<E: de::Error>(self, _v: i64) -> Result<Item, E> {
                Ok(Item::Other)
            }
            fn visit_u64<E: de::Error>(self, _v: u64) -> Result<Item, E> {
                Ok(Item::Other)
            }
            fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Item, E> {
                Ok(Item::Other)
            }
            fn visit_bool<E: de::Error>(self, _v: bool) -> Result<Item, E> {
                Ok(Item::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Item, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element::<toml::Value>()? {
                    v.push(x);
                }
                Ok(Item::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Item, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<S>()? {
                    v.push((k, m.next_value::<V>()?));
                }
                Ok(Item::Table(v))
            }
        }
        d.deserialize_any(Vis)
    }
}

/// One item or an array of them.
#[derive(Debug)]
pub(crate) enum List {
    One(Item),
    Many(Vec<Spanned<Item>>),
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = List;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a table or an array of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<List, E> {
                Ok(List::One(Item::Line(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<List, E> {
                Ok(List::One(Item::Line(v)))
            }
            fn visit_i64<E: de::Error>(self, _v: i64) -> Result<List, E> {
                Ok(List::One(Item::Other))
            }
            fn visit_bool<E: de::Error>(self, _v: bool) -> Result<List, E> {
                Ok(List::One(Item::Other))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<List, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element::<Spanned<Item>>()? {
                    v.push(x);
                }
                Ok(List::Many(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<List, A::Error> {
                Item::deserialize(de::value::MapAccessDeserializer::new(m)).map(List::One)
            }
        }
        d.deserialize_any(Vis)
    }
}

impl List {
    /// Items with their spans; a single item has the span of the whole value.
    pub fn items<'a>(&'a self, span: &Range<usize>) -> Vec<(usize, Range<usize>, &'a Item)> {
        match self {
            List::One(i) => vec![(0, span.clone(), i)],
            List::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.span(), s.get_ref()))
                .collect(),
        }
    }

    pub fn is_many(&self) -> bool {
        matches!(self, List::Many(_))
    }
}
