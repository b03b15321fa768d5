use compact_str::CompactString;
use flint::shuffle::{Aggregator, ExternalAggregator, Partitioner};
use std::sync::Arc;
use std::time::Instant;
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Sum;
impl Aggregator<u64, u64> for Sum {
    fn create(&self, v: u64) -> u64 {
        v
    }
    fn merge_value(&self, c: u64, v: u64) -> u64 {
        c + v
    }
    fn merge_combiners(&self, c: u64, o: u64) -> u64 {
        c + o
    }
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let data = std::fs::read_to_string(&a[1]).unwrap();
    let data = &data[..data.len() / 8];
    let words: Vec<CompactString> = flint::text::ascii_words(data)
        .map(CompactString::from)
        .collect();
    let n = words.len() as f64;
    let dir = tempfile::tempdir().unwrap();
    let env = Arc::new(
        flint::env::TaskEnv::new(
            flint::FlintConf::new(),
            "0".into(),
            dir.path().into(),
            Arc::default(),
            Arc::default(),
            1,
        )
        .unwrap(),
    );
    for _ in 0..2 {
        extra(&words);
        extra2(data);
    }
    for round in 0..3 {
        let w2 = words.clone();
        let t = Instant::now();
        let mut m =
            ExternalAggregator::<CompactString, u64>::new(env.clone(), Some(Partitioner::Hash(2)));
        for w in w2 {
            m.insert_value(&Sum, w, 1).unwrap();
        }
        let d = t.elapsed().as_nanos() as f64 / n;
        let c = m.into_iter(&Sum, true, false).unwrap().count();
        let w2 = words.clone();
        let t = Instant::now();
        let mut h: std::collections::HashMap<CompactString, u64> = Default::default();
        for w in w2 {
            *h.entry(w).or_default() += 1;
        }
        let d2 = t.elapsed().as_nanos() as f64 / n;
        eprintln!(
            "round {round}: aggregator {d:.2} ns/word ({c}), std hashmap {d2:.2} ns/word ({})",
            h.len()
        );
    }
}

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
        u32_at(0) | (u32_at(n - 4) << (8 * (n - 4)))
    } else if n > 0 {
        u64::from(b[0])
            | (u64::from(b[n / 2]) << (8 * (n / 2)))
            | (u64::from(b[n - 1]) << (8 * (n - 1)))
    } else {
        0
    }
}
#[inline]
fn ikey(b: &[u8]) -> [u64; 3] {
    let n = b.len();
    let part = |from: usize| load_le(b.get(from..n.min(from + 8)).unwrap_or(&[]));
    [part(0), part(8), part(16) | ((n as u64 | 0x80) << 56)]
}
#[inline]
fn ihash(k: &[u64; 3]) -> u64 {
    let fold = |a: u64, b: u64| {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    };
    fold(k[0] ^ 0x243f_6a88_85a3_08d3, k[1] ^ 0x1319_8a2e_0370_7344)
        ^ fold(k[2] ^ 0xa409_3822_299f_31d0, 0x9e37_79b9_7f4a_7c15)
}
struct Open {
    slots: Vec<([u64; 3], u64)>,
    mask: usize,
    len: usize,
}
impl Open {
    fn new() -> Self {
        Open {
            slots: vec![([0; 3], 0); 1 << 10],
            mask: (1 << 10) - 1,
            len: 0,
        }
    }
    #[inline]
    fn idx(&self, h: u64) -> usize {
        (h >> 20) as usize & self.mask
    }
    #[inline]
    fn add(&mut self, k: [u64; 3], h: u64, c: u64) {
        let mut i = self.idx(h);
        loop {
            let s = &mut self.slots[i];
            if s.0 == k {
                s.1 += c;
                return;
            }
            if s.0[2] == 0 {
                *s = (k, c);
                self.len += 1;
                if self.len * 4 > self.slots.len() * 3 {
                    self.grow();
                }
                return;
            }
            i = (i + 1) & self.mask;
        }
    }
    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.slots, vec![([0; 3], 0); (self.mask + 1) * 2]);
        self.mask = self.slots.len() - 1;
        self.len = 0;
        for (k, c) in old {
            if k[2] != 0 {
                let h = ihash(&k);
                self.add(k, h, c);
            }
        }
    }
    #[inline]
    fn prefetch(&self, h: u64) {
        let p = self.slots.as_ptr().wrapping_add(self.idx(h)).cast::<i8>();
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p) };
    }
}
pub fn extra(words: &[CompactString]) {
    let n = words.len() as f64;
    let t = Instant::now();
    let mut acc = 0u64;
    for w in words {
        let k = ikey(w.as_bytes());
        acc = acc.wrapping_add(ihash(&k));
    }
    eprintln!(
        "ikey+hash: {:.2} ns/word ({acc})",
        t.elapsed().as_nanos() as f64 / n
    );
    let t = Instant::now();
    let mut o = Open::new();
    for w in words {
        let k = ikey(w.as_bytes());
        let h = ihash(&k);
        o.add(k, h, 1);
    }
    eprintln!(
        "open table: {:.2} ns/word ({})",
        t.elapsed().as_nanos() as f64 / n,
        o.len
    );
    let t = Instant::now();
    let mut o = Open::new();
    let mut buf = [([0u64; 3], 0u64); 64];
    for ch in words.chunks(64) {
        for (j, w) in ch.iter().enumerate() {
            let k = ikey(w.as_bytes());
            let h = ihash(&k);
            buf[j] = (k, h);
            o.prefetch(h);
        }
        for &(k, h) in &buf[..ch.len()] {
            o.add(k, h, 1);
        }
    }
    eprintln!(
        "open table + batch prefetch: {:.2} ns/word ({})",
        t.elapsed().as_nanos() as f64 / n,
        o.len
    );
    let t = Instant::now();
    let mut ht: hashbrown::HashTable<([u64; 3], u64)> = hashbrown::HashTable::new();
    for w in words {
        let k = ikey(w.as_bytes());
        let h = ihash(&k);
        match ht.find_mut(h, |s| s.0 == k) {
            Some(s) => s.1 += 1,
            None => {
                ht.insert_unique(h, (k, 1), |s| ihash(&s.0));
            }
        }
    }
    eprintln!(
        "hashbrown inline (no Option): {:.2} ns/word ({})",
        t.elapsed().as_nanos() as f64 / n,
        ht.len()
    );
}
#[inline]
fn ikey_masked(buf: &[u8], start: usize, n: usize) -> [u64; 3] {
    let w = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&buf[start + i..start + i + 8]);
        u64::from_le_bytes(x)
    };
    let mask = |from: usize| -> u64 {
        let k = n.saturating_sub(from).min(8);
        if k == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * k)) - 1
        }
    };
    [
        w(0) & mask(0),
        w(8) & mask(8),
        (w(16) & mask(16) & 0x00ff_ffff_ffff_ffff) | ((n as u64 | 0x80) << 56),
    ]
}
pub fn extra2(data: &str) {
    let b = data.as_bytes();
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(r) = flint::text::next_ascii_word(data, &mut pos) {
        if r.end + 24 <= b.len() && r.len() <= 23 {
            spans.push((r.start, r.len()));
        }
    }
    let n = spans.len() as f64;
    let t = Instant::now();
    let mut acc = 0u64;
    for &(s, l) in &spans {
        let k = ikey_masked(b, s, l);
        acc = acc.wrapping_add(ihash(&k));
    }
    eprintln!(
        "masked ikey+hash: {:.2} ns/word ({acc})",
        t.elapsed().as_nanos() as f64 / n
    );
    let t = Instant::now();
    let mut acc = 0u64;
    for &(s, l) in &spans {
        let k = ikey(&b[s..s + l]);
        acc = acc.wrapping_add(ihash(&k));
    }
    eprintln!(
        "branchy ikey+hash on same spans: {:.2} ns/word ({acc})",
        t.elapsed().as_nanos() as f64 / n
    );
    let t = Instant::now();
    let mut ht: hashbrown::HashTable<([u64; 3], u64)> = hashbrown::HashTable::new();
    for &(s, l) in &spans {
        let k = ikey_masked(b, s, l);
        let h = ihash(&k);
        match ht.find_mut(h, |s| s.0 == k) {
            Some(s) => s.1 += 1,
            None => {
                ht.insert_unique(h, (k, 1), |s| ihash(&s.0));
            }
        }
    }
    eprintln!(
        "masked + hashbrown: {:.2} ns/word ({})",
        t.elapsed().as_nanos() as f64 / n,
        ht.len()
    );
}
