//! Bounded places for connections a daemon accepts from strangers, shared by
//! the RPC listener (connections in their handshake) and the web UIs (open
//! connections, TLS handshakes).
//!
//! Two limits work together. [`Slots`] bounds how many connections hold a
//! place at once; when all are taken, a new connection takes the oldest one's
//! place (its token is cancelled and its owner closes it), so sockets held
//! open by someone who sends nothing cannot keep honest peers out for long.
//! [`PerSource`] bounds how many places one source address holds, so one host
//! cannot take them all, nor evict everyone else's.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay valid whatever panicked while one was held.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last id given, and the places taken, oldest first, each with the
/// token that gives it up.
type Taken = (u64, VecDeque<(u64, CancellationToken)>);

/// At most `capacity` places; taking one when all are taken gives up the
/// oldest. Cheap to clone (clones share the places).
#[derive(Clone)]
pub struct Slots {
    taken: Arc<Mutex<Taken>>,
    capacity: usize,
}

impl Slots {
    /// Places for `capacity` connections (at least one).
    pub fn new(capacity: usize) -> Self {
        Slots {
            taken: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// A place for a new connection; when all are taken, the oldest holder's
    /// token is cancelled and its place given to this one.
    pub fn take(&self) -> Slot {
        let token = CancellationToken::new();
        let mut g = lock(&self.taken);
        let (next, q) = &mut *g;
        while q.len() >= self.capacity {
            match q.pop_front() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        *next += 1;
        let id = *next;
        q.push_back((id, token.clone()));
        Slot {
            slots: self.clone(),
            id,
            token,
        }
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        lock(&self.taken).1.len()
    }
}

/// A connection's place, given back on drop. Its token is cancelled when a
/// newer connection takes the place: the holder must then close.
pub struct Slot {
    slots: Slots,
    id: u64,
    token: CancellationToken,
}

impl Slot {
    /// Cancelled when this place is given to a newer connection.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots.taken).1.retain(|(id, _)| *id != self.id);
    }
}

/// At most `cap` places per source address. Cheap to clone (clones share
/// the counts).
#[derive(Clone)]
pub struct PerSource {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    cap: usize,
}

impl PerSource {
    /// At most `cap` (at least one) places per address.
    pub fn new(cap: usize) -> Self {
        PerSource {
            counts: Arc::default(),
            cap: cap.max(1),
        }
    }

    /// A place for a connection from `ip`, or None when that address holds
    /// its share already.
    pub fn take(&self, ip: IpAddr) -> Option<SourceShare> {
        let mut m = lock(&self.counts);
        let n = m.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(SourceShare {
            counts: self.counts.clone(),
            ip,
        })
    }
}

/// A source address's place, given back on drop.
pub struct SourceShare {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for SourceShare {
    fn drop(&mut self) {
        let mut m = lock(&self.counts);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_gives_the_oldest_place_to_a_new_connection() {
        let slots = Slots::new(2);
        let a = slots.take();
        let b = slots.take();
        assert!(!a.token().is_cancelled() && !b.token().is_cancelled());
        let c = slots.take();
        assert!(a.token().is_cancelled(), "the oldest is given up");
        assert!(!b.token().is_cancelled() && !c.token().is_cancelled());
        assert_eq!(slots.taken(), 2);
        drop(b);
        assert_eq!(slots.taken(), 1);
        // A given-up place is not counted twice when its holder drops it.
        drop(a);
        assert_eq!(slots.taken(), 1);
        let _d = slots.take();
        assert!(
            !c.token().is_cancelled(),
            "room was left: nobody is evicted"
        );
    }

    #[test]
    fn one_source_holds_at_most_its_share() {
        let per = PerSource::new(2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let a = per.take(ip).expect("first");
        let _b = per.take(ip).expect("second");
        assert!(
            per.take(ip).is_none(),
            "a third from one address is refused"
        );
        assert!(per.take(other).is_some(), "another address is not");
        drop(a);
        assert!(
            per.take(ip).is_some(),
            "a share given back can be taken again"
        );
    }
}
