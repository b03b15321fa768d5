//! Sorting by 64-bit key prefixes (the idea of Spark's `PrefixComparators`): for
//! key types whose order the engine knows (integers, text, bytes, pairs led by
//! one of them, and `Reverse` of these), a number whose order agrees with the
//! key's: `a < b` implies `prefix(a) <= prefix(b)`. A sorter first distributes
//! its entries into buckets by the prefix's leading bits (one counting pass, no
//! comparisons), then sorts each small bucket, comparing prefixes and falling
//! back to the keys only when prefixes tie. Key types not listed, whose `Ord`
//! may be anything, are sorted by comparison alone.

use std::any::{Any, TypeId};
use std::cmp::{Ordering, Reverse};

use compact_str::CompactString;

use crate::bytes::Bytes;
use crate::text::Word;

/// The first 8 bytes, big-endian, zero-padded: byte-wise order (a shorter
/// text sorts before its extensions, and pads with the smallest byte).
fn bytes_prefix(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(w)
}

/// Types with a known order, as a prefix.
trait Prefixed: 'static {
    fn prefix(&self) -> u64;
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Prefixed for $t {
            fn prefix(&self) -> u64 {
                *self as u64
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, usize, bool);

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl Prefixed for $t {
            /// Two's complement with the sign bit flipped orders as unsigned.
            fn prefix(&self) -> u64 {
                (*self as i64 as u64) ^ (1 << 63)
            }
        }
    )*};
}
signed!(i8, i16, i32, i64, isize);

impl Prefixed for char {
    fn prefix(&self) -> u64 {
        *self as u64
    }
}

impl Prefixed for u128 {
    fn prefix(&self) -> u64 {
        (*self >> 64) as u64
    }
}

impl Prefixed for i128 {
    fn prefix(&self) -> u64 {
        ((*self >> 64) as i64 as u64) ^ (1 << 63)
    }
}

macro_rules! bytes_like {
    ($($t:ty => $b:expr),*) => {$(
        impl Prefixed for $t {
            fn prefix(&self) -> u64 {
                let f: fn(&$t) -> &[u8] = $b;
                bytes_prefix(f(self))
            }
        }
    )*};
}
bytes_like!(
    String => |s| s.as_bytes(),
    CompactString => |s| s.as_bytes(),
    Word => |s| s.as_str().as_bytes(),
    Vec<u8> => |v| v,
    Bytes => |v| v
);

/// A pair orders by its first element first.
impl<A: Prefixed, B: 'static> Prefixed for (A, B) {
    fn prefix(&self) -> u64 {
        self.0.prefix()
    }
}

impl<A: Prefixed> Prefixed for Reverse<A> {
    fn prefix(&self) -> u64 {
        !self.0.prefix()
    }
}

/// `S`'s prefix function when `S` is `T` (both are the same type then).
fn as_fn<S: 'static, T: Prefixed>() -> Option<fn(&S) -> u64> {
    (TypeId::of::<S>() == TypeId::of::<T>()).then_some(|s: &S| {
        (s as &dyn Any)
            .downcast_ref::<T>()
            .map_or(0, Prefixed::prefix)
    })
}

/// Calls `$m!` with the key types whose order is known, then `$extra`.
macro_rules! known_types {
    ($m:ident $(, $extra:ty)*) => {
        $m!(
            u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, u128, i128, bool, char,
            String, CompactString, Word, Vec<u8>, Bytes $(, $extra)*
        )
    };
}

/// The prefix of `S`, a type whose order agrees with it; None for types
/// whose order the engine does not know.
pub(crate) fn prefix_fn<S: 'static>() -> Option<fn(&S) -> u64> {
    // Keys alone, and (key, any of these) pairs, each also reversed (a
    // descending sort).
    macro_rules! alone_or_leading {
        ($($t:ty),*) => {
            None$(
                .or_else(|| as_fn::<S, $t>())
                .or_else(|| as_fn::<S, Reverse<$t>>())
                .or_else(|| pairs_led_by::<S, $t>())
            )*
        };
    }
    known_types!(alone_or_leading)
}

/// `(A, B)` and `Reverse<(A, B)>` for the known `B` and `()`.
fn pairs_led_by<S: 'static, A: Prefixed>() -> Option<fn(&S) -> u64> {
    macro_rules! second {
        ($($t:ty),*) => {
            None$(.or_else(|| as_fn::<S, (A, $t)>()).or_else(|| as_fn::<S, Reverse<(A, $t)>>()))*
        };
    }
    known_types!(second, ())
}

/// Key types that encode as a length and then the very bytes they order by
/// (text and bytes, and `Reverse` of them; `Reverse` encodes as its
/// content): a sorter can keep such keys encoded in its pages and compare
/// their bytes, building a key only when it leaves the sorter (Spark's
/// UnsafeExternalSorter keeps keys as bytes the same way).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RawOrder {
    reverse: bool,
    /// Text: its bytes must be UTF-8 (checked as a key is read, so that a
    /// damaged key fails the fetch, which recomputes it, as decoding it
    /// would).
    text: bool,
}

impl RawOrder {
    /// The raw order of `S`, if its encoding is a length and its bytes.
    pub(crate) fn of<S: 'static>() -> Option<RawOrder> {
        macro_rules! raw {
            ($text:expr; $($t:ty),*) => {
                None$(
                    .or_else(|| (TypeId::of::<S>() == TypeId::of::<$t>())
                        .then_some(RawOrder { reverse: false, text: $text }))
                    .or_else(|| (TypeId::of::<S>() == TypeId::of::<Reverse<$t>>())
                        .then_some(RawOrder { reverse: true, text: $text }))
                )*
            };
        }
        raw!(true; String, CompactString, Word).or_else(|| raw!(false; Vec<u8>, Bytes))
    }

    /// Splits the key encoded at the front of `enc` into the bytes it orders
    /// by and the length of its whole encoding; None if `enc` does not start
    /// with one (corrupt input).
    pub(crate) fn split(enc: &[u8]) -> Option<(&[u8], usize)> {
        let (len, rest) = crate::codec::decode_prefix::<u64>("key length", enc).ok()?;
        let len = usize::try_from(len).ok().filter(|&n| n <= rest.len())?;
        let start = enc.len() - rest.len();
        Some((&rest[..len], start + len))
    }

    /// The bytes `key` orders by, if it is exactly one key's encoding (and,
    /// when `check_text`, valid text for a text type; keys encoded here or
    /// read through `key_len_fn` were checked already).
    pub(crate) fn content(self, key: &[u8], check_text: bool) -> Option<&[u8]> {
        let (content, n) = RawOrder::split(key)?;
        let text_ok = !(check_text && self.text) || std::str::from_utf8(content).is_ok();
        (n == key.len() && text_ok).then_some(content)
    }

    /// The length of the key encoded at the front of `enc`, if it is one of
    /// this order's keys (for text, valid UTF-8).
    pub(crate) fn key_len_fn(self) -> fn(&[u8]) -> Option<usize> {
        fn bytes(enc: &[u8]) -> Option<usize> {
            RawOrder::split(enc).map(|(_, n)| n)
        }
        fn text(enc: &[u8]) -> Option<usize> {
            let (content, n) = RawOrder::split(enc)?;
            std::str::from_utf8(content).ok().map(|_| n)
        }
        if self.text { text } else { bytes }
    }

    /// The prefix of a key given the bytes it orders by (as `prefix_fn`'s).
    pub(crate) fn prefix(self, content: &[u8]) -> u64 {
        let p = bytes_prefix(content);
        if self.reverse { !p } else { p }
    }

    /// Compares two keys given the bytes they order by (as their `Ord`).
    pub(crate) fn cmp(self, a: &[u8], b: &[u8]) -> Ordering {
        let o = a.cmp(b);
        if self.reverse { o.reverse() } else { o }
    }
}

/// Fewer entries than this are sorted by comparison alone.
const MIN_BUCKETED: usize = 4096;

/// Entries in order: sorted where they were, or moved into the slots of a
/// new vector (each slot filled exactly once; an empty slot is a bug that the
/// reader reports, never skips).
pub(crate) enum Sorted<E> {
    InPlace(Vec<E>),
    Slots(Vec<Option<E>>),
}

impl<E> Sorted<E> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Sorted::InPlace(v) => v.len(),
            Sorted::Slots(v) => v.len(),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&E> {
        match self {
            Sorted::InPlace(v) => v.get(i),
            Sorted::Slots(v) => v.get(i)?.as_ref(),
        }
    }

    /// The vector back, emptied, when the entries were sorted where they
    /// were (its capacity kept for the next run); a new one otherwise.
    pub(crate) fn emptied(self) -> Vec<E> {
        match self {
            Sorted::InPlace(mut v) => {
                v.clear();
                v
            }
            Sorted::Slots(_) => Vec::new(),
        }
    }

    /// The entries in order; `None` stands for an empty slot.
    pub(crate) fn into_iter(self) -> SortedIter<E> {
        match self {
            Sorted::InPlace(v) => SortedIter::InPlace(v.into_iter()),
            Sorted::Slots(v) => SortedIter::Slots(v.into_iter()),
        }
    }
}

pub(crate) enum SortedIter<E> {
    InPlace(std::vec::IntoIter<E>),
    Slots(std::vec::IntoIter<Option<E>>),
}

impl<E> SortedIter<E> {
    /// The entry `k` places ahead of the next one.
    pub(crate) fn ahead(&self, k: usize) -> Option<&E> {
        match self {
            SortedIter::InPlace(it) => it.as_slice().get(k),
            SortedIter::Slots(it) => it.as_slice().get(k)?.as_ref(),
        }
    }
}

impl<E> Iterator for SortedIter<E> {
    type Item = Option<E>;
    fn next(&mut self) -> Option<Option<E>> {
        match self {
            SortedIter::InPlace(it) => it.next().map(Some),
            SortedIter::Slots(it) => it.next(),
        }
    }
}

/// Orders `entries` by `cmp` (a total order in which no two entries are
/// equal: the sorters break key ties by position), given `prefix`, which
/// agrees with it. The entries move once, each to its bucket's next slot in
/// a single pass (independent stores; applying a computed order in place
/// instead follows cycles of dependent cache misses, measured at half the
/// sort's time).
pub(crate) fn sort_by_prefix<E>(
    mut entries: Vec<E>,
    prefix: impl Fn(&E) -> u64,
    cmp: impl Fn(&E, &E) -> Ordering,
) -> Sorted<E> {
    let n = entries.len();
    if n < MIN_BUCKETED || n > u32::MAX as usize {
        entries.sort_unstable_by(cmp);
        return Sorted::InPlace(entries);
    }
    // Prefixes are computed again in each pass rather than kept (8 bytes an
    // entry the memory budget would have to cover).
    let (min, max) = entries.iter().fold((u64::MAX, 0), |(lo, hi), e| {
        let k = prefix(e);
        (lo.min(k), hi.max(k))
    });
    if min == max {
        entries.sort_unstable_by(cmp);
        return Sorted::InPlace(entries);
    }
    // Buckets from the leading bits in which this run's prefixes differ
    // (a reducer's keys span a range, often a narrow one): about four
    // entries per bucket for evenly spread keys.
    let bits = 64 - (min ^ max).leading_zeros();
    let want = (usize::BITS - n.leading_zeros())
        .saturating_sub(2)
        .clamp(4, 16);
    let shift = bits.saturating_sub(want);
    let base = min >> shift;
    let digit = |k: u64| ((k >> shift) - base) as usize;
    let buckets = digit(max) + 1;
    let mut starts = vec![0u32; buckets + 1];
    for e in &entries {
        starts[digit(prefix(e)) + 1] += 1;
    }
    for i in 0..buckets {
        starts[i + 1] += starts[i];
    }
    let mut slots: Vec<Option<E>> = std::iter::repeat_with(|| None).take(n).collect();
    let mut next = starts.clone();
    for e in entries {
        let d = digit(prefix(&e));
        slots[next[d] as usize] = Some(e);
        next[d] += 1;
    }
    for b in 0..buckets {
        let run = &mut slots[starts[b] as usize..starts[b + 1] as usize];
        if run.len() > 1 {
            run.sort_unstable_by(|x, y| match (x, y) {
                (Some(x), Some(y)) => prefix(x).cmp(&prefix(y)).then_with(|| cmp(x, y)),
                // Every slot is filled; an empty one sorts last.
                (x, y) => x.is_none().cmp(&y.is_none()),
            });
        }
    }
    Sorted::Slots(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<S: Ord + Clone + std::fmt::Debug + 'static>(keys: Vec<S>) {
        let p = prefix_fn::<S>().expect("a known key type");
        for a in &keys {
            for b in keys.iter().take(50) {
                if a < b {
                    assert!(p(a) <= p(b), "{a:?} < {b:?} but prefixes disagree");
                }
            }
        }
        // Entries carry their position: the sort must equal a stable sort.
        let entries: Vec<(S, usize)> = keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
        let mut model = entries.clone();
        model.sort();
        let sorted = sort_by_prefix(entries, |e| p(&e.0), |a, b| a.cmp(b));
        assert_eq!(sorted.len(), model.len());
        for (i, m) in model.iter().enumerate() {
            assert_eq!(sorted.get(i), Some(m));
        }
        let out: Vec<_> = sorted
            .into_iter()
            .collect::<Option<_>>()
            .expect("every slot filled");
        assert_eq!(out, model);
    }

    fn spread(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17))
    }

    #[test]
    fn known_types_sort_as_their_order() {
        check(spread(20_000).collect::<Vec<u64>>());
        // Narrow ranges and many ties.
        check(spread(20_000).map(|x| x % 37).collect::<Vec<u64>>());
        check(
            spread(20_000)
                .map(|x| 1_000_000 + x % 5000)
                .collect::<Vec<u64>>(),
        );
        check(spread(20_000).map(|x| x as i64).collect::<Vec<i64>>());
        check(
            spread(20_000)
                .map(|x| (x as i32) % 100)
                .collect::<Vec<i32>>(),
        );
        check(
            spread(20_000)
                .map(|x| (x as u128) << 60 | x as u128)
                .collect::<Vec<u128>>(),
        );
        check(
            spread(20_000)
                .map(|x| -((x % 1000) as i128) << 70)
                .collect::<Vec<i128>>(),
        );
        check(
            spread(20_000)
                .map(|x| (x % 7, (x >> 8) as u16))
                .collect::<Vec<(u64, u16)>>(),
        );
        check(
            spread(20_000)
                .map(|x| Reverse((x % 300, x % 11)))
                .collect::<Vec<Reverse<(u64, u64)>>>(),
        );
        check(
            spread(20_000)
                .map(|x| Reverse(x as i16))
                .collect::<Vec<Reverse<i16>>>(),
        );
        // Text: shared prefixes longer than 8 bytes, empty strings, NULs,
        // and a text that is a prefix of another.
        let words: Vec<String> = spread(20_000)
            .map(|x| match x % 5 {
                0 => String::new(),
                1 => format!("commonprefix{}", x % 100),
                2 => format!("a\0{}", x % 3),
                3 => "a".repeat((x % 12) as usize),
                _ => format!("{x:x}"),
            })
            .collect();
        check(words.clone());
        check(
            words
                .iter()
                .map(|w| (w.clone(), w.len() as u8))
                .collect::<Vec<_>>(),
        );
        check(
            words
                .iter()
                .map(|w| Bytes(w.clone().into_bytes()))
                .collect::<Vec<_>>(),
        );
        check(
            words
                .iter()
                .map(|w| Word::from(w.as_str()))
                .collect::<Vec<_>>(),
        );
        check(words.into_iter().map(Reverse).collect::<Vec<_>>());
        // Sorted by comparison alone: few entries, and prefixes all equal.
        check(spread(1000).collect::<Vec<u64>>());
        check(
            spread(20_000)
                .map(|x| format!("commonprefix{}", x % 999))
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn other_types_have_no_prefix() {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Custom(u64);
        assert!(prefix_fn::<Custom>().is_none());
        assert!(prefix_fn::<(Custom, u64)>().is_none());
        assert!(prefix_fn::<(u64, u64, u64)>().is_none());
        assert!(prefix_fn::<Option<u64>>().is_none());
        assert!(prefix_fn::<Reverse<Reverse<u64>>>().is_none());
    }
}
