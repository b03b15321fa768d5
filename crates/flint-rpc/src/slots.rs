//! Bounded places for connections a daemon accepts from strangers, shared by
//! the RPC listener (connections in their handshake) and the web UIs (open
//! connections, TLS handshakes).
//!
//! Two limits work together. [`Slots`] bounds how many connections hold a
//! place at once; when all are taken, a new connection takes the oldest one's
//! place (its token is cancelled and its owner closes it), so sockets held
//! open by someone who sends nothing cannot keep honest peers out for long.
//! [`PerSource`] bounds how many places one source address holds, so one host
//! cannot take them all, and how often its connections may give up someone
//! else's place ([`EVICTIONS_PER_SECOND`]), so a host opening connections in
//! a loop cannot keep evicting honest peers whose handshakes take a round
//! trip over a slow network (past its budget, its new connections are
//! refused while every place is taken).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

    /// A place for a new connection from `source`; when all are taken, the
    /// oldest holder's token is cancelled and its place given to this one,
    /// if `source` has evictions left this second (else None).
    pub fn take(&self, source: &SourceShare) -> Option<Slot> {
        self.take_at(source, Instant::now())
    }

    fn take_at(&self, source: &SourceShare, now: Instant) -> Option<Slot> {
        let token = CancellationToken::new();
        let mut g = lock(&self.taken);
        let (next, q) = &mut *g;
        if q.len() >= self.capacity && !source.may_evict(now) {
            return None;
        }
        while q.len() >= self.capacity {
            match q.pop_front() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        *next += 1;
        let id = *next;
        q.push_back((id, token.clone()));
        Some(Slot {
            slots: self.clone(),
            id,
            token,
        })
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

/// Places a connection from one source address may take from others a
/// second, when every place is taken.
pub const EVICTIONS_PER_SECOND: u32 = 8;

/// One source address: places it holds, and its evictions in the current
/// one-second window.
struct Source {
    held: usize,
    window: Instant,
    evictions: u32,
}

/// Sources' entries, kept a while after their last place is given back (so
/// closing every connection does not renew an eviction budget).
type Sources = HashMap<IpAddr, Source>;

/// Entries of sources holding nothing are dropped once this old.
const FORGET_AFTER: Duration = Duration::from_secs(2);

/// At most `cap` places per source address, and `EVICTIONS_PER_SECOND`.
/// Cheap to clone (clones share the counts).
#[derive(Clone)]
pub struct PerSource {
    sources: Arc<Mutex<Sources>>,
    cap: usize,
}

impl PerSource {
    /// At most `cap` (at least one) places per address.
    pub fn new(cap: usize) -> Self {
        PerSource {
            sources: Arc::default(),
            cap: cap.max(1),
        }
    }

    /// A place for a connection from `ip`, or None when that address holds
    /// its share already.
    pub fn take(&self, ip: IpAddr) -> Option<SourceShare> {
        let now = Instant::now();
        let mut m = lock(&self.sources);
        // Bounded by the addresses seen within `FORGET_AFTER`.
        if m.len() > 1024 {
            m.retain(|_, s| s.held > 0 || now.duration_since(s.window) < FORGET_AFTER);
        }
        let s = m.entry(ip).or_insert(Source {
            held: 0,
            window: now,
            evictions: 0,
        });
        if s.held >= self.cap {
            return None;
        }
        s.held += 1;
        Some(SourceShare {
            sources: self.sources.clone(),
            ip,
        })
    }
}

/// A source address's place, given back on drop.
pub struct SourceShare {
    sources: Arc<Mutex<Sources>>,
    ip: IpAddr,
}

impl SourceShare {
    /// Whether this source may give up another connection's place now (and
    /// if so, counts it).
    fn may_evict(&self, now: Instant) -> bool {
        let mut m = lock(&self.sources);
        let Some(s) = m.get_mut(&self.ip) else {
            return false;
        };
        if now.duration_since(s.window) >= Duration::from_secs(1) {
            s.window = now;
            s.evictions = 0;
        }
        if s.evictions >= EVICTIONS_PER_SECOND {
            return false;
        }
        s.evictions += 1;
        true
    }
}

impl Drop for SourceShare {
    fn drop(&mut self) {
        let mut m = lock(&self.sources);
        if let Some(s) = m.get_mut(&self.ip) {
            s.held = s.held.saturating_sub(1);
            if s.held == 0 && s.window.elapsed() >= FORGET_AFTER {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        [10, 0, 0, n].into()
    }

    #[test]
    fn a_full_set_gives_the_oldest_place_to_a_new_connection() {
        let slots = Slots::new(2);
        let per = PerSource::new(8);
        let src = per.take(ip(1)).unwrap();
        let a = slots.take(&src).unwrap();
        let b = slots.take(&src).unwrap();
        assert!(!a.token().is_cancelled() && !b.token().is_cancelled());
        let c = slots.take(&src).unwrap();
        assert!(a.token().is_cancelled(), "the oldest is given up");
        assert!(!b.token().is_cancelled() && !c.token().is_cancelled());
        assert_eq!(slots.taken(), 2);
        drop(b);
        assert_eq!(slots.taken(), 1);
        // A given-up place is not counted twice when its holder drops it.
        drop(a);
        assert_eq!(slots.taken(), 1);
        let _d = slots.take(&src).unwrap();
        assert!(
            !c.token().is_cancelled(),
            "room was left: nobody is evicted"
        );
    }

    #[test]
    fn one_source_holds_at_most_its_share() {
        let per = PerSource::new(2);
        let a = per.take(ip(1)).expect("first");
        let _b = per.take(ip(1)).expect("second");
        assert!(
            per.take(ip(1)).is_none(),
            "a third from one address is refused"
        );
        assert!(per.take(ip(2)).is_some(), "another address is not");
        drop(a);
        assert!(
            per.take(ip(1)).is_some(),
            "a share given back can be taken again"
        );
    }

    #[test]
    fn a_source_evicts_at_most_its_budget_a_second() {
        let slots = Slots::new(1);
        let per = PerSource::new(100);
        let honest = per.take(ip(1)).unwrap();
        let flood = per.take(ip(2)).unwrap();
        let t0 = Instant::now();
        let mut held = vec![slots.take_at(&honest, t0).unwrap()];
        for _ in 0..EVICTIONS_PER_SECOND {
            held.push(slots.take_at(&flood, t0).expect("within the budget"));
        }
        assert!(
            held[..held.len() - 1]
                .iter()
                .all(|s| s.token().is_cancelled())
        );
        let last = held.last().unwrap();
        assert!(
            slots.take_at(&flood, t0).is_none(),
            "past its budget a source is refused rather than evicting"
        );
        assert!(!last.token().is_cancelled());
        // Another source still may; the flood may again the next second.
        assert!(slots.take_at(&honest, t0).is_some());
        let next = t0 + Duration::from_secs(1);
        assert!(slots.take_at(&flood, next).is_some());
        // With a free place, no budget is needed.
        let roomy = Slots::new(100);
        for _ in 0..2 * EVICTIONS_PER_SECOND {
            held.push(roomy.take_at(&flood, next).unwrap());
        }
    }

    #[test]
    fn closing_every_connection_does_not_renew_a_budget() {
        let slots = Slots::new(1);
        let per = PerSource::new(100);
        let t0 = Instant::now();
        let first = per.take(ip(2)).unwrap();
        let mut held = Vec::new();
        // One free place, then the budget's evictions, then a refusal.
        for _ in 0..EVICTIONS_PER_SECOND + 2 {
            held.push(slots.take_at(&first, t0));
        }
        assert!(held.last().unwrap().is_none());
        drop(held);
        drop(first);
        let again = per.take(ip(2)).unwrap();
        let _other = slots.take_at(&per.take(ip(1)).unwrap(), t0).unwrap();
        assert!(slots.take_at(&again, t0).is_none(), "the budget was kept");
    }
}
