//! [`Fields`]: an event's own fields, names to JSON values, written and read as a JSON
//! object.
//!
//! A list, not a map: an event carries a handful of fields, and a `serde_json::Map` (a
//! B-tree) per event, with its node allocation, ordered inserts and drop, was the largest
//! single cost of mapping OTLP log records to events (BENCHMARKS.md, "Peers"). Each name
//! is held once: a later value for a name replaces the earlier one, as the last of
//! duplicate keys wins when a JSON object is read into a map. Order is the order of first
//! insertion; nothing downstream depends on it (the digest sorts fields into its rows).

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(String, Value)>);

/// Above this many entries, duplicate names are found with a hash set instead of a scan.
const SCAN_LIMIT: usize = 16;

impl Fields {
    pub fn new() -> Fields {
        Fields(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Fields {
        Fields(Vec::with_capacity(n))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`; the value it had, if any.
    pub fn insert(&mut self, name: String, value: Value) -> Option<Value> {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                self.0.push((name, value));
                None
            }
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Removes `name`; the value it had, if any.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(at).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// As a JSON object.
    pub fn to_map(&self) -> serde_json::Map<String, Value> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// From entries that may repeat a name: the last value of each name is kept.
    fn from_entries(mut entries: Vec<(String, Value)>) -> Fields {
        if entries.len() <= SCAN_LIMIT {
            let mut fields = Fields::with_capacity(entries.len());
            for (k, v) in entries {
                fields.insert(k, v);
            }
            return fields;
        }
        // Keep each name's last entry, in the order of those entries.
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut keep = vec![false; entries.len()];
        for (i, (k, _)) in entries.iter().enumerate().rev() {
            keep[i] = seen.insert(k.as_str());
        }
        drop(seen);
        let mut i = 0;
        entries.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        Fields(entries)
    }
}

impl std::ops::Index<&str> for Fields {
    type Output = Value;

    /// The value of `name`; panics when there is none, as a map's index does.
    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or_else(|| panic!("no field {name:?}"))
    }
}

impl IntoIterator for Fields {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (String, Value)>, fn(&'a (String, Value)) -> (&'a String, &'a Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Each entry set as by [`Fields::insert`]: a name already present takes the new value.
/// Many entries at once are deduplicated in one pass (a hash set past a few), not with a
/// scan per entry.
impl Extend<(String, Value)> for Fields {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        if self.0.len() + iter.size_hint().1.unwrap_or(usize::MAX) <= SCAN_LIMIT {
            // Few: in place, no new list (this runs per event in the digest).
            self.0.reserve(iter.size_hint().0);
            for (k, v) in iter {
                self.insert(k, v);
            }
            return;
        }
        let mut entries = std::mem::take(&mut self.0);
        entries.extend(iter);
        *self = Fields::from_entries(entries);
    }
}

/// A JSON object's entries (its names are unique already).
impl From<serde_json::Map<String, Value>> for Fields {
    fn from(map: serde_json::Map<String, Value>) -> Fields {
        Fields(map.into_iter().collect())
    }
}

impl FromIterator<(String, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Fields {
        Fields::from_entries(iter.into_iter().collect())
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of fields")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Fields, A::Error> {
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(1024));
                while let Some(entry) = access.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Fields::from_entries(entries))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_are_unique_and_the_last_value_wins_as_in_a_json_object() {
        for n in [3, 40] {
            // Every name twice (n > SCAN_LIMIT takes the hash set path).
            let text = format!(
                "{{{}}}",
                (0..2 * n).map(|i| format!("\"k{}\":{}", i % n, i)).collect::<Vec<_>>().join(",")
            );
            let fields: Fields = serde_json::from_str(&text).unwrap();
            let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(fields.len(), n);
            assert_eq!(fields.to_map(), map, "the same as a map reads it");
            let back: serde_json::Map<String, Value> = serde_json::from_str(&serde_json::to_string(&fields).unwrap()).unwrap();
            assert_eq!(back, map, "written as a JSON object");
        }
        let mut fields = Fields::new();
        assert_eq!(fields.insert("a".into(), json!(1)), None);
        assert_eq!(fields.insert("b".into(), json!("x")), None);
        assert_eq!(fields.insert("a".into(), json!(2)), Some(json!(1)));
        assert_eq!((fields.len(), &fields["a"], fields.get("c")), (2, &json!(2), None));
        let collected: Fields = [("z".to_owned(), json!(1)), ("z".to_owned(), json!(2))].into_iter().collect();
        assert_eq!(collected.to_map(), json!({"z": 2}).as_object().unwrap().clone());
        assert!(serde_json::from_str::<Fields>("[1]").is_err(), "only an object");
    }
}
