//! The pods naming one address: nearly always one, more only for duplicate annotations. One
//! holder is kept inline: a pool of a 150,000-pod cluster indexes every address in use, and a
//! vector per address would be an allocation each.

use super::uid::PodUid;

/// The UIDs naming one address, sorted, never empty while in a pool's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holders {
    One(PodUid),
    /// Two or more, sorted.
    Many(Vec<PodUid>),
}

impl Holders {
    pub fn insert(&mut self, uid: PodUid) {
        match self {
            Holders::One(only) if *only == uid => {}
            Holders::One(only) => {
                let mut uids = vec![only.clone(), uid];
                uids.sort();
                *self = Holders::Many(uids);
            }
            Holders::Many(uids) => {
                if let Err(at) = uids.binary_search(&uid) {
                    uids.insert(at, uid);
                }
            }
        }
    }

    /// Removes `uid`; false when nobody is left (the caller drops the entry).
    pub fn remove(&mut self, uid: &PodUid) -> bool {
        match self {
            Holders::One(only) => only != uid,
            Holders::Many(uids) => {
                uids.retain(|u| u != uid);
                match uids.as_slice() {
                    [] => false,
                    [last] => {
                        *self = Holders::One(last.clone());
                        true
                    }
                    _ => true,
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Holders::One(_) => 1,
            Holders::Many(uids) => uids.len(),
        }
    }

    pub fn to_vec(&self) -> Vec<PodUid> {
        match self {
            Holders::One(only) => vec![only.clone()],
            Holders::Many(uids) => uids.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> PodUid {
        PodUid::new(s)
    }

    #[test]
    fn one_then_many_sorted_then_one_then_none() {
        let mut h = Holders::One(uid("b"));
        h.insert(uid("b"));
        assert_eq!(h, Holders::One(uid("b")));
        h.insert(uid("c"));
        h.insert(uid("a"));
        h.insert(uid("a"));
        assert_eq!(h.len(), 3);
        assert_eq!(h.to_vec(), vec![uid("a"), uid("b"), uid("c")]);
        assert!(h.remove(&uid("b")));
        assert!(h.remove(&uid("zzz")));
        assert!(h.remove(&uid("a")));
        assert_eq!(h, Holders::One(uid("c")));
        assert!(h.remove(&uid("a")));
        assert!(!h.remove(&uid("c")));
    }
}
