//! A generational arena: stable small keys for the shard's objects, stale keys detected.
//!
//! Objects refer to each other by key (never by reference), so the shard can own everything in
//! flat vectors and mutate one object while holding the keys of others.

use std::fmt;
use std::marker::PhantomData;

pub struct Key<T> {
    index: u32,
    generation: u32,
    _of: PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// A key that names nothing in particular, for tests and benchmarks that build objects by hand.
    pub fn detached(index: u32) -> Key<T> {
        Key { index, generation: u32::MAX, _of: PhantomData }
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Key<T> {}
impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.generation == other.generation
    }
}
impl<T> Eq for Key<T> {}
impl<T> std::hash::Hash for Key<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
        self.generation.hash(state);
    }
}
impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}v{}", self.index, self.generation)
    }
}

enum Slot<T> {
    Occupied { generation: u32, value: T },
    Free { generation: u32, next_free: Option<u32> },
}

pub struct Arena<T> {
    slots: Vec<Slot<T>>,
    free_head: Option<u32>,
    len: usize,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena { slots: Vec::new(), free_head: None, len: 0 }
    }
}

impl<T> Arena<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, value: T) -> Key<T> {
        self.insert_with(|_| value)
    }

    /// Inserts a value that needs to know its own key.
    pub fn insert_with(&mut self, make: impl FnOnce(Key<T>) -> T) -> Key<T> {
        self.len += 1;
        if let Some(index) = self.free_head {
            let Slot::Free { generation, next_free } = self.slots[index as usize] else {
                unreachable!("the free list only links free slots");
            };
            let generation = generation.wrapping_add(1);
            self.free_head = next_free;
            let key = Key { index, generation, _of: PhantomData };
            self.slots[index as usize] = Slot::Occupied { generation, value: make(key) };
            return key;
        }
        let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 objects per shard");
        let key = Key { index, generation: 0, _of: PhantomData };
        self.slots.push(Slot::Occupied { generation: 0, value: make(key) });
        key
    }

    pub fn get(&self, key: Key<T>) -> Option<&T> {
        match self.slots.get(key.index as usize)? {
            Slot::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: Key<T>) -> Option<&mut T> {
        match self.slots.get_mut(key.index as usize)? {
            Slot::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    pub fn contains(&self, key: Key<T>) -> bool {
        self.get(key).is_some()
    }

    pub fn remove(&mut self, key: Key<T>) -> Option<T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        match slot {
            Slot::Occupied { generation, .. } if *generation == key.generation => {
                let freed = Slot::Free { generation: key.generation, next_free: self.free_head };
                let Slot::Occupied { value, .. } = std::mem::replace(slot, freed) else {
                    unreachable!("matched as occupied above");
                };
                self.free_head = Some(key.index);
                self.len -= 1;
                Some(value)
            }
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key<T>, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, slot)| match slot {
            Slot::Occupied { generation, value } => {
                Some((Key { index: i as u32, generation: *generation, _of: PhantomData }, value))
            }
            Slot::Free { .. } => None,
        })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key<T>, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, slot)| match slot {
            Slot::Occupied { generation, value } => {
                Some((Key { index: i as u32, generation: *generation, _of: PhantomData }, value))
            }
            Slot::Free { .. } => None,
        })
    }

    pub fn keys(&self) -> Vec<Key<T>> {
        self.iter().map(|(k, _)| k).collect()
    }
}

impl<T> std::ops::Index<Key<T>> for Arena<T> {
    type Output = T;
    fn index(&self, key: Key<T>) -> &T {
        self.get(key).expect("key of a live object")
    }
}

impl<T> std::ops::IndexMut<Key<T>> for Arena<T> {
    fn index_mut(&mut self, key: Key<T>) -> &mut T {
        self.get_mut(key).expect("key of a live object")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_miss_after_reuse() {
        let mut a = Arena::default();
        let k1 = a.insert("one");
        let k2 = a.insert("two");
        assert_eq!(a.remove(k1), Some("one"));
        let k3 = a.insert("three");
        assert_eq!(k3.index(), k1.index());
        assert_eq!(a.get(k1), None);
        assert_eq!(a.get(k3), Some(&"three"));
        assert_eq!(a.len(), 2);
        assert_eq!(a.remove(k1), None);
        assert_eq!(a.iter().map(|(_, v)| *v).collect::<Vec<_>>(), vec!["three", "two"]);
        assert!(a.contains(k2));
    }
}
