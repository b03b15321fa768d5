//! Text helpers for jobs over lines: splitting a line into words the way
//! `str::split_ascii_whitespace` does, eight bytes at a time (a word's end is
//! found with one 64-bit test per eight bytes instead of a branch per byte).

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
}
