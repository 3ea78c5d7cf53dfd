//! The compiled mapping: a tree of record keys whose leaves name the event field they fill,
//! built from the JSON pointers of a [`FieldMapping`](super::FieldMapping).

use super::{Field, MappingError};

#[derive(Debug)]
pub(super) enum Entry {
    Leaf(Field),
    Branch(Node),
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) entries: Vec<(String, Entry)>,
    /// Entry index + 1 by [`bucket_of`] the key; 0 for none, [`SHARED_BUCKET`] when two
    /// entries share the bucket (then the entries are searched in turn).
    buckets: [u8; 64],
}

impl Default for Node {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            buckets: [0; 64],
        }
    }
}

const SHARED_BUCKET: u8 = u8::MAX;

/// A key's bucket: a mix of its length and first and last bytes, which tells the usual log
/// field names apart.
fn bucket_of(key: &[u8]) -> usize {
    let (Some(first), Some(last)) = (key.first(), key.last()) else {
        return 0;
    };
    (key.len() * 7 + usize::from(*first) * 3 + usize::from(*last)) & 63
}

impl Node {
    /// The entry named `key`.
    pub(super) fn find(&self, key: &str) -> Option<&(String, Entry)> {
        let bytes = key.as_bytes();
        match self.buckets[bucket_of(bytes)] {
            0 => None,
            SHARED_BUCKET => self
                .entries
                .iter()
                .find(|(name, _)| name.as_bytes() == bytes),
            slot => self
                .entries
                .get(usize::from(slot) - 1)
                .filter(|(name, _)| name.as_bytes() == bytes),
        }
    }

    pub(super) fn push(&mut self, name: String, entry: Entry) {
        let bucket = &mut self.buckets[bucket_of(name.as_bytes())];
        *bucket = match *bucket {
            // More entries than slot numbers: search them all.
            0 if self.entries.len() < usize::from(SHARED_BUCKET) - 1 => {
                self.entries.len() as u8 + 1
            }
            _ => SHARED_BUCKET,
        };
        self.entries.push((name, entry));
    }
}

pub(super) fn split_pointer(
    field: &'static str,
    pointer: &str,
) -> Result<Vec<String>, MappingError> {
    let invalid = |reason: &str| MappingError::Invalid {
        field,
        reason: reason.to_owned(),
    };
    let body = match pointer.strip_prefix('/') {
        Some(body) => body,
        None if !pointer.is_empty() => return Ok(vec![pointer.to_owned()]),
        None => return Err(invalid("empty pointer")),
    };
    body.split('/')
        .map(|token| {
            if token.is_empty() {
                return Err(invalid("empty pointer segment"));
            }
            Ok(token.replace("~1", "/").replace("~0", "~"))
        })
        .collect()
}

pub(super) fn insert_path(
    node: &mut Node,
    segments: &[String],
    field: Field,
) -> Result<(), String> {
    let (first, rest) = segments.split_first().ok_or("empty pointer")?;
    let existing = node.entries.iter_mut().position(|(name, _)| name == first);
    if rest.is_empty() {
        if existing.is_some() {
            return Err(format!("{first:?} is already mapped to another field"));
        }
        node.push(first.clone(), Entry::Leaf(field));
        return Ok(());
    }
    let index = match existing {
        Some(index) => index,
        None => {
            node.push(first.clone(), Entry::Branch(Node::default()));
            node.entries.len() - 1
        }
    };
    match &mut node.entries[index].1 {
        Entry::Branch(child) => insert_path(child, rest, field),
        Entry::Leaf(_) => Err(format!(
            "{first:?} is mapped to a value and cannot hold other fields"
        )),
    }
}
