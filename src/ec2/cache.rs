//! A small keyed cache of EC2 answers that do not change for the life of the process (an
//! instance type's limits) or change slowly and are refreshed explicitly (a subnet).

use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) struct Cache<V> {
    map: Mutex<HashMap<String, V>>,
}

impl<V: Clone> Cache<V> {
    pub(crate) fn new() -> Self {
        Cache {
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<V> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn insert(&self, key: &str, value: V) {
        self.lock().insert(key.to_string(), value);
    }

    /// Every key, sorted (stable request order).
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, V>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_value_per_key() {
        let c = Cache::new();
        assert_eq!(c.get("a"), None::<u32>);
        c.insert("b", 2);
        c.insert("a", 1);
        c.insert("a", 3);
        assert_eq!(c.get("a"), Some(3));
        assert_eq!(c.keys(), vec!["a".to_string(), "b".to_string()]);
    }
}
