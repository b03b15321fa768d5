//! Text helpers for jobs over lines: splitting a line into words the way
//! `str::split_ascii_whitespace` does, eight bytes at a time (a word's end is
//! found with one 64-bit test per eight bytes instead of a branch per byte),
//! and [`Word`], a text key built for hashing (Spark's UTF8String plays the
//! same part): words of up to 23 bytes are three machine words, built from
//! the line with masked loads, so hashing and comparing them has no branch on
//! their length and the aggregation table uses them as they are.

use std::ops::Range;

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0C' | b'\r')
}

/// The byte range of the next word of `s` at or after `*pos`, moving `*pos`
/// past it; `None` at the end. Words are what `split_ascii_whitespace`
/// yields: maximal runs of bytes other than ASCII whitespace.
#[inline]
pub fn next_ascii_word(s: &str, pos: &mut usize) -> Option<Range<usize>> {
    let b = s.as_bytes();
    let n = b.len();
    let mut i = *pos;
    while i < n && is_ws(b[i]) {
        i += 1;
    }
    if i >= n {
        *pos = n;
        return None;
    }
    let start = i;
    i += 1;
    loop {
        match b.get(i..i + 8) {
            Some(chunk) => {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                let w = u64::from_le_bytes(w);
                // High bit set in each byte below 0x21 (every whitespace byte
                // is): exact at the lowest such byte, which is all we read.
                let low = w.wrapping_sub(0x2121_2121_2121_2121) & !w & 0x8080_8080_8080_8080;
                if low == 0 {
                    i += 8;
                    continue;
                }
                let j = i + (low.trailing_zeros() / 8) as usize;
                if is_ws(b[j]) {
                    i = j;
                    break;
                }
                // A control byte that is not whitespace: part of the word.
                i = j + 1;
            }
            None => {
                while i < n && !is_ws(b[i]) {
                    i += 1;
                }
                break;
            }
        }
    }
    *pos = i;
    Some(start..i)
}

/// The words of `s`, as `s.split_ascii_whitespace()` gives them.
pub fn ascii_words(s: &str) -> AsciiWords<'_> {
    AsciiWords { s, pos: 0 }
}

pub struct AsciiWords<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Iterator for AsciiWords<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let r = next_ascii_word(self.s, &mut self.pos)?;
        // Both ends are at ASCII bytes or the string's ends: char boundaries.
        self.s.get(r)
    }
}

/// Longest text held inline in a [`Word`].
pub const WORD_INLINE: usize = 23;

/// A word of text as a shuffle key. Up to [`WORD_INLINE`] bytes it is held
/// inline, zero padded, with its length in the last byte (the layout the
/// aggregation table keys on, so it takes it without rebuilding it); longer
/// text is on the heap. Equality, ordering and serialization are those of
/// its text (a `Word` encodes exactly as the `String` of its text, so either
/// reads the other's shuffle output); hashing agrees with equality but is not
/// `str`'s hash, so a `Word` key partitions differently from a `String` key.
#[derive(Clone, PartialEq, Eq)]
pub struct Word(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline(Inline),
    Heap(Box<str>),
}

/// Eight-byte aligned, so the three words the table loads each lie within
/// one of the 16-byte moves that carried the record here (a load that
/// straddles two stores waits for both to retire: at offset 1, behind the
/// enum's tag, that stall cost more than everything inline keys save).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
struct Inline([u8; 24]);

impl Word {
    /// The word for `text` (any length).
    pub fn new(text: &str) -> Word {
        let b = text.as_bytes();
        if b.len() > WORD_INLINE {
            return Word(Repr::Heap(text.into()));
        }
        let mut buf = [0u8; 24];
        buf[..b.len()].copy_from_slice(b);
        buf[WORD_INLINE] = b.len() as u8;
        Word(Repr::Inline(Inline(buf)))
    }

    /// The inline word whose layout is these three little-endian words
    /// (text, zero padding, length in the top byte; callers build them so).
    #[inline(always)]
    pub(crate) fn from_words(w: [u64; 3]) -> Word {
        let mut out = [0u8; 24];
        for (i, x) in w.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
        // Equality and hashing compare the raw words: only the canonical
        // layout (text, then zeros, then its length) may be built.
        debug_assert!(
            {
                let len = usize::from(out[WORD_INLINE]);
                len <= WORD_INLINE
                    && out[len..WORD_INLINE].iter().all(|&b| b == 0)
                    && std::str::from_utf8(&out[..len]).is_ok()
            },
            "not a word's inline layout: {w:x?}"
        );
        Word(Repr::Inline(Inline(out)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from whole words of valid text (constructors only), so
            // this never fails; an empty string would be the fallback.
            Repr::Inline(Inline(b)) => {
                std::str::from_utf8(&b[..usize::from(b[WORD_INLINE])]).unwrap_or("")
            }
            Repr::Heap(s) => s,
        }
    }

    /// The inline layout as three little-endian words (text, zero padding,
    /// length in the top byte of the last), if inline: what the aggregation
    /// table keys on.
    /// (Inlined into generic callers in other crates: returned through
    /// memory, the words stall the table's compare on store forwarding.)
    #[inline(always)]
    pub(crate) fn inline_words(&self) -> Option<[u64; 3]> {
        match &self.0 {
            Repr::Inline(Inline(b)) => Some([le64(&b[..8]), le64(&b[8..16]), le64(&b[16..])]),
            Repr::Heap(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::hash::Hash for Word {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match &self.0 {
            Repr::Inline(_) => {
                for w in self.inline_words().unwrap_or_default() {
                    h.write_u64(w);
                }
            }
            // Never equal to an inline word (lengths differ), so hashing
            // differently is consistent with Eq.
            Repr::Heap(s) => s.hash(h),
        }
    }
}

impl PartialOrd for Word {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Word {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(o.as_str())
    }
}

impl std::ops::Deref for Word {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}
impl AsRef<str> for Word {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}
impl From<&str> for Word {
    fn from(s: &str) -> Word {
        Word::new(s)
    }
}
impl From<String> for Word {
    fn from(s: String) -> Word {
        Word::new(&s)
    }
}
impl std::fmt::Display for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}
impl serde::Serialize for Word {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> serde::Deserialize<'de> for Word {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Word, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Word;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Word, E> {
                Ok(Word::new(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// The words of a text as [`Word`]s, split as `split_ascii_whitespace`
/// splits. Owns its text, so no per-line vector is built; use it as
/// `flat_map(Fn!(|line: String| flint::text::Words::new(line)))`, or over
/// chunks of many lines (`FlintContext::text_file_chunks`), which splits the
/// same words with no record per line.
///
/// The text is read in blocks of 64 bytes: one pass builds a block's
/// whitespace bitmask, eight bytes at a time, and the words starting in the
/// block come from its bits (a word starts at a non-whitespace byte after a
/// whitespace byte; its length is the run of zero bits from there), with no
/// branch per byte and none on a word's length.
pub struct Words {
    text: String,
    /// Offset of the current block in the text, or in `tail` once `in_tail`.
    off: usize,
    /// Whitespace masks of the current block and the one after it (bit i
    /// is byte `off + i`; bytes past the text's end count as whitespace).
    ws: u64,
    next_ws: u64,
    /// Bits of the current block where a word starts, not yet yielded.
    starts: u64,
    /// 1 when the byte before the current block is whitespace (or the
    /// block is the first).
    carry: u64,
    started: bool,
    /// The last blocks (fewer than 128 bytes of text) are read from a copy
    /// padded with spaces, so every block, the block after it and a word's
    /// 24-byte load lie within bounds without a test per word.
    in_tail: bool,
    /// Offset in the text of `tail[0]`, and the text bytes it holds.
    tail_at: usize,
    tail_len: usize,
    tail: [u8; TAIL],
}

/// Room for the text's last (fewer than 128) bytes, the mask of the block
/// after the second, and a 24-byte load at any word start.
const TAIL: usize = 192;

/// Byte masks keeping a word's first `len` bytes: `LEN_MASK[24 - len..][..24]`.
const LEN_MASK: [u8; 48] = {
    let mut m = [0u8; 48];
    let mut i = 0;
    while i < 24 {
        m[i] = 0xFF;
        i += 1;
    }
    m
};

impl Words {
    pub fn new(text: String) -> Words {
        Words {
            text,
            off: 0,
            ws: 0,
            next_ws: 0,
            starts: 0,
            carry: 1,
            started: false,
            in_tail: false,
            tail_at: 0,
            tail_len: 0,
            tail: [b' '; TAIL],
        }
    }

    /// Moves to the next block and finds the words starting in it; false
    /// when the text has no more blocks. Once per 64 bytes, so kept out of
    /// line: `next` stays small enough to inline into its caller (a `Word`
    /// returned through memory and copied at once stalls on store forwarding).
    #[inline(never)]
    fn advance(&mut self) -> bool {
        let (at, first) = if self.started {
            (self.off + 64, false)
        } else {
            (0, true)
        };
        self.started = true;
        let len = if self.in_tail {
            self.tail_len
        } else {
            self.text.len()
        };
        if at >= len {
            self.off = at.min(len);
            return false;
        }
        if !self.in_tail && at + 128 > len {
            let rem = len - at;
            self.tail[..rem].copy_from_slice(&self.text.as_bytes()[at..]);
            self.in_tail = true;
            self.tail_at = at;
            self.tail_len = rem;
            self.off = 0;
            self.ws = block_mask(&self.tail[..64]);
            self.next_ws = block_mask(&self.tail[64..128]);
        } else {
            let src: &[u8] = if self.in_tail {
                &self.tail
            } else {
                self.text.as_bytes()
            };
            self.off = at;
            self.ws = if first {
                block_mask(&src[at..at + 64])
            } else {
                self.next_ws
            };
            self.next_ws = block_mask(&src[at + 64..at + 128]);
        }
        self.starts = !self.ws & ((self.ws << 1) | self.carry);
        self.carry = self.ws >> 63;
        true
    }

    /// A word of more than [`WORD_INLINE`] bytes starting at `start` in the
    /// text (rare: kept out of the hot path).
    #[cold]
    #[inline(never)]
    fn long_word(&mut self, start: usize) -> Word {
        let mut pos = start;
        match next_ascii_word(&self.text, &mut pos) {
            Some(r) => Word::new(self.text.get(r).unwrap_or("")),
            None => Word::new(""),
        }
    }
}

#[inline(always)]
fn le64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_le_bytes(x)
}

/// Bit i set when byte i of the 64 is ASCII whitespace. Written as one
/// byte test per lane into an array, which the compiler turns into vector
/// compares; each eight result bytes are then gathered into one byte of the
/// mask by a multiply (the products do not overlap). Measured 1.8x faster
/// than testing eight bytes at a time in a `u64`.
#[inline(always)]
fn block_mask(b: &[u8]) -> u64 {
    let b: &[u8; 64] = b[..64].try_into().expect("a 64-byte block");
    let mut high = [0u8; 64];
    for (h, &c) in high.iter_mut().zip(b) {
        // `is_ws` as arithmetic: space, or 0x09..=0x0D but not 0x0B.
        let ws = c == b' ' || (c.wrapping_sub(9) <= 4 && c != 0x0B);
        *h = u8::from(ws) << 7;
    }
    let mut m = 0;
    for k in 0..8 {
        let hi = le64(&high[8 * k..]);
        m |= ((hi >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    m
}

impl Iterator for Words {
    type Item = Word;

    /// The next word start from the block's bits; its length is the run
    /// of non-whitespace bits after it (the two blocks' masks cover at least
    /// 65 bytes from any start), and its key is 24 bytes loaded there and
    /// masked to that length.
    #[inline(always)]
    fn next(&mut self) -> Option<Word> {
        while self.starts == 0 {
            if !self.advance() {
                return None;
            }
        }
        let i = self.starts.trailing_zeros();
        self.starts &= self.starts - 1;
        let win = (u128::from(self.next_ws) << 64) | u128::from(self.ws);
        let len = ((win >> i) as u64).trailing_zeros() as usize;
        let at = self.off + i as usize;
        if len > WORD_INLINE {
            let start = if self.in_tail { self.tail_at + at } else { at };
            return Some(self.long_word(start));
        }
        let src: &[u8] = if self.in_tail {
            &self.tail
        } else {
            self.text.as_bytes()
        };
        let b = &src[at..at + 24];
        let m = &LEN_MASK[24 - len..48 - len];
        Some(Word::from_words([
            le64(b) & le64(m),
            le64(&b[8..]) & le64(&m[8..]),
            (le64(&b[16..]) & le64(&m[16..])) | ((len as u64) << 56),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(s: &str) {
        let got: Vec<&str> = ascii_words(s).collect();
        let want: Vec<&str> = s.split_ascii_whitespace().collect();
        assert_eq!(got, want, "{s:?}");
    }

    #[test]
    fn splits_as_split_ascii_whitespace() {
        for s in [
            "",
            " ",
            "a",
            "  a  bb\tccc\r\ndddd\x0ceeeee ",
            "averyveryverylongwordthatspansseveralchunks and more",
            "ctrl\x01byte\x1fstays\x0binside word",
            "ünïcödé wörds\u{a0}nbsp stays",
            "12345678 123456789 1234567 ",
        ] {
            same(s);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_splits_as_split_ascii_whitespace(
            s in "[ \t\r\n\x0b\x0c\x01a-zé\u{a0}]{0,80}"
        ) {
            same(&s);
        }
    }

    #[test]
    fn words_of_every_length_and_place_split_the_same() {
        let mut lines = Vec::new();
        for len in 0..40 {
            let w = "x".repeat(len);
            for lead in ["", " ", "\t\t", "a "] {
                for trail in ["", " ", "\r", " bb"] {
                    lines.push(format!("{lead}{w}{trail}"));
                    lines.push(format!("{lead}{w} {w}{trail}"));
                }
            }
        }
        lines.push("\x0b\x01 é\u{a0}é 😀😀😀😀😀😀\x0c".into());
        for line in lines {
            let got: Vec<Word> = Words::new(line.clone()).collect();
            let want: Vec<&str> = line.split_ascii_whitespace().collect();
            assert_eq!(
                got.iter().map(Word::as_str).collect::<Vec<_>>(),
                want,
                "{line:?}"
            );
            for (g, w) in got.iter().zip(&want) {
                assert!(g == &Word::new(w), "{line:?}");
            }
        }
    }

    /// Every word length at every offset from a block boundary, in texts
    /// long enough to be read in blocks, in the padded tail and across
    /// the switch between them.
    #[test]
    fn words_at_every_block_offset_split_the_same() {
        for lead in 0..140 {
            for len in [1, 2, 7, 8, 15, 16, 23, 24, 25, 63, 64, 65, 130] {
                for trail in [0, 1, 60, 200] {
                    let text = format!(
                        "{}{} z{}",
                        " a".repeat(lead / 2) + &" ".repeat(lead % 2),
                        "w".repeat(len),
                        " ".repeat(trail)
                    );
                    let got: Vec<Word> = Words::new(text.clone()).collect();
                    let want: Vec<&str> = text.split_ascii_whitespace().collect();
                    assert_eq!(
                        got.iter().map(Word::as_str).collect::<Vec<_>>(),
                        want,
                        "lead {lead} len {len} trail {trail}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_whitespace_test_is_exact_for_every_byte() {
        for c in 0..=255u8 {
            for at in 0..64 {
                let mut b = [b'a'; 64];
                b[at] = c;
                let want = if is_ws(c) { 1u64 << at } else { 0 };
                assert_eq!(block_mask(&b), want, "byte {c:#x} at {at}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn words_are_the_split_text_and_equal_as_text(
            s in "[ \t\ra-zé\u{a0}]{0,120}",
        ) {
            let got: Vec<Word> = Words::new(s.clone()).collect();
            let want: Vec<&str> = s.split_ascii_whitespace().collect();
            proptest::prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert_eq!(g.as_str(), *w);
                // However it was built, a word equals (and hashes as) the
                // word of its text.
                let fresh = Word::new(w);
                proptest::prop_assert!(g == &fresh);
                proptest::prop_assert_eq!(
                    crate::shuffle::stable_hash(g),
                    crate::shuffle::stable_hash(&fresh)
                );
                let enc = crate::codec::encode("t", g).unwrap();
                proptest::prop_assert_eq!(&enc, &crate::codec::encode("t", &w.to_string()).unwrap());
                let back: Word = crate::codec::decode("t", &enc).unwrap();
                proptest::prop_assert!(back == fresh);
            }
        }

        /// Long texts (many blocks) of every whitespace and control byte,
        /// multi-byte text and words longer than a block.
        #[test]
        fn long_texts_split_as_split_ascii_whitespace(
            parts in proptest::collection::vec(
                "([ \t\r\n\x0b\x0c\x01\x1fa-z\u{e9}\u{a0}]{1,9}|y{20,90})",
                0..150,
            ),
        ) {
            let s = parts.concat();
            let got: Vec<Word> = Words::new(s.clone()).collect();
            let want: Vec<&str> = s.split_ascii_whitespace().collect();
            proptest::prop_assert_eq!(got.iter().map(Word::as_str).collect::<Vec<_>>(), want);
        }

        #[test]
        fn words_order_as_their_text(a in "\\PC{0,30}", b in "\\PC{0,30}") {
            proptest::prop_assert_eq!(Word::new(&a).cmp(&Word::new(&b)), a.cmp(&b));
            proptest::prop_assert_eq!(Word::new(&a) == Word::new(&b), a == b);
        }
    }
}
