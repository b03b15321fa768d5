//! String keys of up to 23 bytes held inline as three machine words, and
//! the open-addressing table the aggregator keeps them in.

use std::num::NonZeroU64;

/// A string key of up to `INLINE` bytes held in the table itself (Spark's
/// Tungsten BytesToBytesMap keeps keys as bytes for the same reasons): zero
/// padded, its length in the last byte, so hashing is three multiplies with no
/// branch on length and equality is three word compares, and a probe never
/// follows a pointer to a key's heap bytes. The record's own key is dropped;
/// the table's keys become `K` again only when entries leave it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct InlineKey(pub(super) [u64; 3]);

pub(super) const INLINE: usize = 23;

impl InlineKey {
    #[inline]
    pub(super) fn new(b: &[u8]) -> Option<InlineKey> {
        #[cfg(target_arch = "x86_64")]
        if masked_loads() {
            // SAFETY: the CPU has the features `new_masked` is compiled for
            // (checked just above).
            return unsafe { InlineKey::new_masked(b) };
        }
        if b.len() > INLINE {
            return None;
        }
        Some(InlineKey::from_loads(b))
    }

    /// `new` by a masked load (None past `INLINE` bytes); inlines into
    /// callers compiled with the same features.
    ///
    /// # Safety
    /// The CPU must have AVX-512BW and AVX-512VL (see [`masked_loads`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512bw,avx512vl")]
    #[inline]
    pub(super) unsafe fn new_masked(b: &[u8]) -> Option<InlineKey> {
        if b.len() > INLINE {
            return None;
        }
        // SAFETY: this function's own features.
        Some(unsafe { InlineKey::from_masked(b) })
    }

    /// The key of `b` (at most `INLINE` bytes) built in registers from loads
    /// of the text itself: a byte buffer filled by a copy and read back as
    /// words stalls on store forwarding (measured: slower than hashing the
    /// `String`).
    #[inline]
    fn from_loads(b: &[u8]) -> InlineKey {
        let n = b.len().min(INLINE);
        let part = |from: usize| load_le(b.get(from..n.min(from + 8)).unwrap_or(&[]));
        InlineKey([part(0), part(8), part(16) | ((n as u64) << 56)])
    }

    /// The key of `b` (at most `INLINE` bytes) from one load that reads
    /// exactly its bytes and zeroes the rest: no branch on the length, where
    /// the portable path mispredicts on words of varying length (it was 8% of
    /// the README's WordCount).
    ///
    /// # Safety
    /// The CPU must have AVX-512BW and AVX-512VL (see [`masked_loads`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512bw,avx512vl")]
    #[inline]
    unsafe fn from_masked(b: &[u8]) -> InlineKey {
        use std::arch::x86_64::{_mm256_extract_epi64, _mm256_maskz_loadu_epi8};
        let n = b.len().min(INLINE);
        let keep = (1u32 << n) - 1;
        // SAFETY: lanes outside `keep` are neither read nor faulted on (the
        // instruction's masking, and LLVM's masked load: masked-off lanes are
        // not accessed), and the first `n` bytes are `b`'s.
        let v = unsafe { _mm256_maskz_loadu_epi8(keep, b.as_ptr().cast()) };
        InlineKey([
            _mm256_extract_epi64::<0>(v) as u64,
            _mm256_extract_epi64::<1>(v) as u64,
            _mm256_extract_epi64::<2>(v) as u64 | ((n as u64) << 56),
        ])
    }

    #[inline]
    pub(super) fn hash(&self) -> u64 {
        // Folded multiplies (as foldhash/wyhash): the high half of each
        // product, folded into the low, carries every input bit to the low
        // bits `InlineTable` takes its home slots from.
        const K: [u64; 3] = [
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
        ];
        let fold = |a: u64, b: u64| {
            let p = u128::from(a) * u128::from(b);
            (p as u64) ^ ((p >> 64) as u64)
        };
        let [a, b, c] = self.0;
        fold(a ^ K[0], b ^ K[1]) ^ fold(c ^ K[2], 0x9e37_79b9_7f4a_7c15)
    }

    pub(super) fn bytes(&self) -> ([u8; 24], usize) {
        let mut buf = [0u8; 24];
        for (i, w) in self.0.iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let len = usize::from(buf[INLINE]).min(INLINE);
        (buf, len)
    }
}

/// Whether this CPU loads a byte range under a mask (AVX-512BW with VL):
/// detected once, then a cached flag.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn masked_loads() -> bool {
    std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// Up to 8 bytes as a little-endian word, zero padded, with at most three
/// loads and no loop.
#[inline]
fn load_le(b: &[u8]) -> u64 {
    let n = b.len();
    let u32_at = |i: usize| {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[i..i + 4]);
        u64::from(u32::from_le_bytes(x))
    };
    if n >= 8 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[..8]);
        u64::from_le_bytes(x)
    } else if n >= 4 {
        // Two overlapping halves; the shared bytes are equal, so OR is exact.
        u32_at(0) | (u32_at(n - 4) << (8 * (n - 4)))
    } else if n > 0 {
        u64::from(b[0])
            | (u64::from(b[n / 2]) << (8 * (n / 2)))
            | (u64::from(b[n - 1]) << (8 * (n - 1)))
    } else {
        0
    }
}

/// Set in a stored key's last word: its top byte is a length of at most 23,
/// so the bit is otherwise clear, and a stored key is never zero. That gives
/// `Option<InlineSlot<C>>` a niche, so an empty slot costs nothing (32 bytes a
/// slot for a `u64` count) and needs no `unsafe`.
const STORED: u64 = 1 << 63;

/// An entry of `InlineTable`: a key in stored form and its combiner.
pub(super) struct InlineSlot<C> {
    a: u64,
    b: u64,
    c: NonZeroU64,
    pub(super) comb: C,
}

impl<C> InlineSlot<C> {
    #[inline]
    fn new(k: InlineKey, comb: C) -> Self {
        let [a, b, c] = k.0;
        let c = NonZeroU64::new(c | STORED).unwrap_or(NonZeroU64::MAX);
        InlineSlot { a, b, c, comb }
    }

    pub(super) fn key(&self) -> InlineKey {
        InlineKey([self.a, self.b, self.c.get() & !STORED])
    }
}

/// Slots of a table when it first holds a key.
const MIN_SLOTS: usize = 64;

/// A linear-probing hash table of inline keys, at most half full (the
/// layout of the `stream` WordCount baseline). A lookup reads one slot,
/// usually the key's home slot and rarely the next, so a key costs one cache
/// line when slots are 32 bytes (a `u64` count: the WordCount case); a table
/// with separate control bytes (hashbrown's) reads two, and in WordCount,
/// where the table outgrows L2, each was often a miss.
pub(super) struct InlineTable<C> {
    slots: Vec<Option<InlineSlot<C>>>,
    len: usize,
}

impl<C> InlineTable<C> {
    pub(super) fn new() -> Self {
        InlineTable {
            slots: Vec::new(),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes a slot takes, held or empty.
    pub(super) const SLOT_BYTES: usize = std::mem::size_of::<Option<InlineSlot<C>>>();

    /// Bytes the slots take (held or empty).
    pub(super) fn allocated_bytes(&self) -> usize {
        self.slots.len() * Self::SLOT_BYTES
    }

    /// Makes room for `keys` keys in all without growing.
    pub(super) fn reserve(&mut self, keys: usize) {
        let want = (keys.saturating_mul(2)).max(MIN_SLOTS).next_power_of_two();
        if want > self.slots.len() {
            self.resize(want);
        }
    }

    /// Merges into the combiner of `key` (whose `InlineKey::hash` is `hash`):
    /// `f(Some(old))` if it is held, `f(None)` if not. `spare` as
    /// `merge_in_place` takes it.
    #[inline]
    pub(super) fn upsert(
        &mut self,
        key: InlineKey,
        hash: u64,
        spare: &mut Option<C>,
        f: impl FnOnce(Option<C>) -> C,
    ) where
        C: Clone,
    {
        if self.slots.is_empty() {
            self.resize(MIN_SLOTS);
        }
        let [a, b, c] = key.0;
        let c = c | STORED;
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            match &mut self.slots[i] {
                Some(s) if s.a == a && s.b == b && s.c.get() == c => {
                    if std::mem::needs_drop::<C>() {
                        // Moved out and back: a combiner that owns memory
                        // (a group's values) is never cloned. Were `f` to
                        // panic the slot would stay empty, breaking the probe
                        // chains through it and leaving `len` one too high;
                        // the task fails with the panic and the table is
                        // dropped with it, never used again.
                        if let Some(old) = self.slots[i].take() {
                            let comb = f(Some(old.comb));
                            self.slots[i] = Some(InlineSlot { comb, ..old });
                        }
                    } else {
                        super::spill::merge_in_place(&mut s.comb, spare, f);
                    }
                    return;
                }
                Some(_) => i = (i + 1) & mask,
                empty @ None => {
                    *empty = Some(InlineSlot::new(key, f(None)));
                    self.len += 1;
                    if self.len * 2 > self.slots.len() {
                        self.resize(self.slots.len() * 2);
                    }
                    return;
                }
            }
        }
    }

    /// Asks the CPU to start loading the home slot of a key with `hash`, so
    /// that a lookup a few records later finds it in cache.
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self
            .slots
            .get(hash as usize & self.slots.len().wrapping_sub(1))
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let ptr = (slot as *const Option<InlineSlot<C>>).cast::<i8>();
            // SAFETY: a prefetch never faults and reads nothing the program
            // sees; the pointer is to a live slot anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// Moves every entry into `n` slots (a power of two, more than twice
    /// the entries).
    fn resize(&mut self, n: usize) {
        let old = std::mem::take(&mut self.slots);
        self.slots.resize_with(n, || None);
        let mask = n - 1;
        for s in old.into_iter().flatten() {
            let mut i = s.key().hash() as usize & mask;
            while self.slots[i].is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i] = Some(s);
        }
    }

    /// Up to `n` entries spread over the table, for size sampling: the
    /// first held slot at or after each of `n` evenly spaced positions,
    /// looking at most `SAMPLE_SCAN` slots from each (a table sized ahead
    /// for many keys is mostly empty, and walking it all was slow).
    pub(super) fn sample(&self, n: usize) -> impl Iterator<Item = &InlineSlot<C>> {
        const SAMPLE_SCAN: usize = 64;
        let stride = (self.slots.len() / n.max(1)).max(1);
        (0..self.slots.len())
            .step_by(stride)
            .take(n)
            .filter_map(move |from| self.slots[from..].iter().take(SAMPLE_SCAN).flatten().next())
    }

    /// Takes every entry and frees the slots.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = InlineSlot<C>> + use<C> {
        self.len = 0;
        std::mem::take(&mut self.slots).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::util::fuzz_cases(2000)))]
        /// Inline keys give back exactly their text, and two texts share a key
        /// only if they are equal.
        #[test]
        fn inline_keys_are_exact(a in "\\PC{0,12}", b in "[a-c ]{0,24}") {
            for t in [&a, &b] {
                match InlineKey::new(t.as_bytes()) {
                    Some(k) => {
                        let (buf, len) = k.bytes();
                        proptest::prop_assert_eq!(&buf[..len], t.as_bytes());
                    }
                    None => proptest::prop_assert!(t.len() > INLINE),
                }
            }
            if let (Some(x), Some(y)) = (InlineKey::new(a.as_bytes()), InlineKey::new(b.as_bytes())) {
                proptest::prop_assert_eq!(x == y, a == b);
            }
        }
    }

    #[test]
    fn inline_keys_cover_every_length_and_byte() {
        let mut seen = std::collections::HashSet::new();
        for len in 0..=INLINE {
            for fill in [0u8, 1, b'a', 0x7f, 0xff] {
                let mut t = vec![b'x'; len];
                if let Some(last) = t.last_mut() {
                    *last = fill;
                }
                let k = InlineKey::new(&t).unwrap();
                let (buf, n) = k.bytes();
                assert_eq!(&buf[..n], &t[..]);
                // (The empty text is the same whatever the fill.)
                assert!(seen.insert(k.0) || len == 0, "{len} {fill}");
            }
        }
        assert!(InlineKey::new(&[b'x'; INLINE + 1]).is_none());
    }

    #[cfg(target_arch = "x86_64")]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::util::fuzz_cases(2000)))]
        /// Where the CPU has masked loads, they build the same key as the
        /// portable loads, for every length and byte. (Without AVX-512 there
        /// is no masked path to check, and the test checks nothing.)
        #[test]
        fn masked_and_portable_keys_agree(t in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=INLINE)) {
            if masked_loads() {
                // SAFETY: the CPU has the features (checked above).
                let m = unsafe { InlineKey::from_masked(&t) };
                proptest::prop_assert!(m == InlineKey::from_loads(&t));
            }
        }
    }

    /// A key's bytes end where a page ends and the next page is unreadable:
    /// building the key reads nothing past them (a full-width load would
    /// fault here). On x86-64 Linux, where pages are 4 KiB.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn keys_read_only_their_own_bytes() {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, mprotect, munmap};
        let page = 4096;
        let len = std::num::NonZeroUsize::new(2 * page).unwrap();
        // SAFETY: a fresh private anonymous mapping, used only here and
        // unmapped at the end; its second page is made unreadable.
        unsafe {
            let base = mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
            .unwrap();
            let guard = base.byte_add(page);
            mprotect(guard, page, ProtFlags::PROT_NONE).unwrap();
            let first = std::slice::from_raw_parts_mut(base.as_ptr().cast::<u8>(), page);
            for (i, b) in first.iter_mut().enumerate() {
                *b = b'a' + (i % 26) as u8;
            }
            for n in 0..=INLINE {
                let t = &first[page - n..];
                let k = InlineKey::new(t).unwrap();
                let (buf, got) = k.bytes();
                assert_eq!(&buf[..got], t);
                assert!(InlineKey::from_loads(t) == k);
            }
            munmap(base, len.get()).unwrap();
        }
    }

    /// The table against a `HashMap` model: every key's combiner, through
    /// growth, equal keys and keys that share a home slot.
    fn check_against_model(keys: &[String], reserve: usize) {
        let mut t = InlineTable::<u64>::new();
        t.reserve(reserve);
        let mut spare = None;
        let mut model = std::collections::HashMap::<&str, u64>::new();
        for (n, k) in keys.iter().enumerate() {
            let ik = InlineKey::new(k.as_bytes()).unwrap();
            let v = n as u64 + 1;
            t.upsert(ik, ik.hash(), &mut spare, |old| {
                old.unwrap_or(0).wrapping_mul(31).wrapping_add(v)
            });
            let m = model.entry(k).or_insert(0);
            *m = m.wrapping_mul(31).wrapping_add(v);
            assert_eq!(t.len(), model.len());
        }
        assert!(t.allocated_bytes() >= 2 * t.len() * std::mem::size_of::<InlineSlot<u64>>());
        let mut got: Vec<(Vec<u8>, u64)> = t
            .drain()
            .map(|s| {
                let (buf, len) = s.key().bytes();
                (buf[..len].to_vec(), s.comb)
            })
            .collect();
        got.sort();
        let mut want: Vec<(Vec<u8>, u64)> = model
            .into_iter()
            .map(|(k, c)| (k.as_bytes().to_vec(), c))
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(t.len(), 0);
        assert_eq!(t.allocated_bytes(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::util::fuzz_cases(128)))]
        #[test]
        fn table_matches_a_map(keys in proptest::collection::vec("[a-d]{0,3}|\\PC{0,5}|[xy]{20,23}", 0..400), reserve in 0usize..300) {
            check_against_model(&keys, reserve);
        }
    }

    #[test]
    fn table_holds_many_keys_and_the_empty_key() {
        let mut keys: Vec<String> = (0..20_000).map(|i| format!("w{}", i % 7_000)).collect();
        keys.push(String::new());
        keys.push(String::new());
        check_against_model(&keys, 0);
    }

    /// Size samples of a table sized ahead for many keys look at a bounded
    /// number of slots, and find the entries there are.
    #[test]
    fn samples_of_a_sparse_table_are_bounded() {
        let mut t = InlineTable::<u64>::new();
        t.reserve(1 << 20);
        assert_eq!(t.sample(16).count(), 0);
        let mut spare = None;
        for k in ["a", "b", "c"] {
            let ik = InlineKey::new(k.as_bytes()).unwrap();
            t.upsert(ik, ik.hash(), &mut spare, |_| 7);
        }
        // Three keys among two million slots: most positions find nothing
        // within their scan, and none finds more than one.
        assert!(t.sample(16).count() <= 16);
        assert!(t.sample(16).all(|s| s.comb == 7));
        let mut dense = InlineTable::<u64>::new();
        for i in 0..1000 {
            let k = format!("k{i}");
            let ik = InlineKey::new(k.as_bytes()).unwrap();
            dense.upsert(ik, ik.hash(), &mut spare, |_| i);
        }
        assert_eq!(dense.sample(16).count(), 16);
    }

    /// Combiners that own memory are moved, not cloned, and all come back.
    #[test]
    fn table_moves_owning_combiners() {
        let mut t = InlineTable::<Vec<u32>>::new();
        let mut spare = None;
        for i in 0..1000u32 {
            let k = format!("k{}", i % 10);
            let ik = InlineKey::new(k.as_bytes()).unwrap();
            t.upsert(ik, ik.hash(), &mut spare, |old| {
                let mut v = old.unwrap_or_default();
                v.push(i);
                v
            });
        }
        assert!(spare.is_none(), "an owning combiner was cloned");
        let mut total = 0;
        for s in t.drain() {
            let (buf, len) = s.key().bytes();
            let k: u32 = std::str::from_utf8(&buf[1..len]).unwrap().parse().unwrap();
            assert!(s.comb.iter().all(|i| i % 10 == k));
            assert!(
                s.comb.windows(2).all(|w| w[0] < w[1]),
                "values out of order"
            );
            total += s.comb.len();
        }
        assert_eq!(total, 1000);
    }
}
