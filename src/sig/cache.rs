//! Decoded public keys, so a key seen again skips its decoding (a field
//! square root for every scheme here: a large share of one verification).
//! Validators see the same keys over and over; a key is public and its
//! decoding a pure function of its bytes, so caching changes no verdict.
//!
//! Bounded: 16 shards of at most `per_shard` keys; a full shard is emptied
//! and starts again (no pathological cost when keys never repeat).

use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::Mutex;

const SHARDS: usize = 16;

pub struct KeyCache<K, V> {
    shards: [Mutex<HashMap<K, V>>; SHARDS],
    per_shard: usize,
}

impl<K: Eq + Hash, V: Clone> KeyCache<K, V> {
    pub fn new(per_shard: usize) -> KeyCache<K, V> {
        KeyCache { shards: std::array::from_fn(|_| Mutex::new(HashMap::new())), per_shard: per_shard.max(1) }
    }

    /// The cached value for `key` (whose bytes pick the shard), or
    /// `decode(key)`, remembered.
    pub fn get_or_insert<Q>(&self, key: &Q, shard_byte: u8, decode: impl FnOnce(&Q) -> V) -> V
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized + ToOwnedKey<K>,
    {
        let shard = &self.shards[shard_byte as usize % SHARDS];
        if let Some(v) = shard.lock().get(key) {
            return v.clone();
        }
        let v = decode(key);
        let mut m = shard.lock();
        if m.len() >= self.per_shard {
            m.clear();
        }
        m.insert(key.to_owned_key(), v.clone());
        v
    }
}

impl<K: Eq + Hash, V: Clone> KeyCache<K, V> {
    /// The cached value for `key`, if any.
    pub fn get(&self, key: &K, shard_byte: u8) -> Option<V> {
        self.shards[shard_byte as usize % SHARDS].lock().get(key).cloned()
    }

    /// Remember `v` for `key` (a full shard is emptied first).
    pub fn insert(&self, key: K, shard_byte: u8, v: V) {
        let mut m = self.shards[shard_byte as usize % SHARDS].lock();
        if m.len() >= self.per_shard {
            m.clear();
        }
        m.insert(key, v);
    }
}

/// The owned form a borrowed key is stored as.
pub trait ToOwnedKey<K> {
    fn to_owned_key(&self) -> K;
}

impl ToOwnedKey<[u8; 32]> for [u8; 32] {
    fn to_owned_key(&self) -> [u8; 32] {
        *self
    }
}

impl ToOwnedKey<Box<[u8]>> for [u8] {
    fn to_owned_key(&self) -> Box<[u8]> {
        self.into()
    }
}
