//! Record streams in files: batches of postcard-encoded records, each batch
//! optionally lz4-compressed and prefixed by a 16-byte header (stored length, raw
//! length, xxh3-64 checksum of the stored bytes). Used by shuffle data files,
//! spill files and disk-cached blocks alike.
//!
//! A reader is always told how many bytes its stream holds and checks that it
//! consumed exactly that many: a file cut at a frame boundary, a frame with a bad
//! checksum, or bytes left over are errors, never a shorter list of records.

use std::io::{Read, Write};
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::env::Compression;
use crate::error::{FlintError, Result};

const TARGET_FRAME: usize = 64 << 10;
/// Stored length, raw length (u32 each), checksum (u64), little-endian.
pub(crate) const HEADER: usize = 16;
/// Refuse frames claiming more than this (corrupt or hostile input).
const MAX_FRAME: usize = 256 << 20;

pub struct FrameWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    compression: Compression,
    written: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W, compression: Compression) -> Self {
        FrameWriter {
            out,
            buf: Vec::with_capacity(TARGET_FRAME + 1024),
            compression,
            written: 0,
        }
    }

    pub fn write<T: Serialize>(&mut self, rec: &T) -> Result<()> {
        encode_record(rec, &mut self.buf)?;
        if self.buf.len() >= TARGET_FRAME {
            self.flush_frame()?;
        }
        Ok(())
    }

    /// Writes a sized record: the key, then `value` (an encoding) behind its
    /// length (see `FrameReader::next_sized`).
    pub fn write_sized<K: Serialize>(&mut self, key: &K, value: &[u8]) -> Result<()> {
        codec::encode_into("shuffle record", key, &mut self.buf)?;
        self.write_value_sized(value)
    }

    /// As `write_sized`, the key already encoded.
    pub fn write_sized_raw(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(key);
        self.write_value_sized(value)
    }

    fn write_value_sized(&mut self, value: &[u8]) -> Result<()> {
        codec::encode_into("shuffle record", &(value.len() as u64), &mut self.buf)?;
        self.buf.extend_from_slice(value);
        if self.buf.len() >= TARGET_FRAME {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.emit_frame(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    fn emit_frame(&mut self, raw: &[u8]) -> Result<()> {
        // Readers refuse larger frames as corrupt; a record this large is
        // refused here, once, with its size, not retried as lost output.
        if raw.len() > MAX_FRAME {
            return Err(FlintError::Codec {
                what: "shuffle record",
                reason: format!(
                    "a record of {} MiB is larger than the 256 MiB a shuffle, spill or \
                     cache frame holds; split the value into smaller records",
                    raw.len() >> 20
                ),
            });
        }
        let io = |e| FlintError::io("cannot write", "shuffle or spill file", e);
        let compressed;
        let stored = match self.compression {
            Compression::None => raw,
            Compression::Lz4 => {
                compressed = lz4_flex::block::compress(raw);
                &compressed[..]
            }
        };
        let header = frame_header(stored, raw.len());
        self.out.write_all(&header).map_err(io)?;
        self.out.write_all(stored).map_err(io)?;
        self.written += (HEADER + stored.len()) as u64;
        Ok(())
    }

    /// Writes `raw`, whole already-encoded records, as one frame.
    pub fn write_encoded(&mut self, raw: &[u8]) -> Result<()> {
        self.flush_frame()?;
        if raw.is_empty() {
            return Ok(());
        }
        self.emit_frame(raw)
    }

    /// Copies `len` bytes of frames written by another `FrameWriter` with the
    /// same compression (checksums travel with them); fewer is an error.
    pub fn copy_frames(&mut self, src: &mut impl Read, len: u64) -> Result<u64> {
        self.flush_frame()?;
        let n = std::io::copy(&mut src.take(len), &mut self.out)
            .map_err(|e| FlintError::io("cannot copy", "spilled shuffle segment", e))?;
        if n != len {
            return Err(corrupt(&format!(
                "spilled segment ends after {n} of its {len} bytes"
            )));
        }
        self.written += n;
        Ok(n)
    }

    /// Flushes the last frame; returns the bytes written since creation or the
    /// previous `finish_segment`.
    pub fn finish_segment(&mut self) -> Result<u64> {
        self.flush_frame()?;
        Ok(std::mem::take(&mut self.written))
    }

    pub fn into_inner(mut self) -> Result<W> {
        self.flush_frame()?;
        self.out
            .flush()
            .map_err(|e| FlintError::io("cannot flush", "shuffle or spill file", e))?;
        Ok(self.out)
    }
}

fn frame_header(stored: &[u8], raw_len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&(stored.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&(raw_len as u32).to_le_bytes());
    h[8..].copy_from_slice(&checksum(stored, raw_len).to_le_bytes());
    h
}

/// xxh3-64 of the stored bytes, seeded with the raw length so a header whose
/// lengths were damaged does not match either.
fn checksum(stored: &[u8], raw_len: usize) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(stored, raw_len as u64)
}

/// Reads records of type `T` back from a frame stream of a known length.
pub struct FrameReader<R: Read, T> {
    input: R,
    compression: Compression,
    frame: Vec<u8>,
    pos: usize,
    scratch: Vec<u8>,
    /// Bytes the stream holds, and bytes consumed so far.
    len: u64,
    consumed: u64,
    /// Whether every `T` encodes to nothing (so each record is one
    /// `EMPTY_RECORD` byte), found out at the first record.
    empty: Option<bool>,
    _t: PhantomData<fn() -> T>,
}

impl<R: Read, T: DeserializeOwned> FrameReader<R, T> {
    /// A reader of the `len` bytes of frames that `input` yields.
    pub fn new(input: R, compression: Compression, len: u64) -> Self {
        FrameReader {
            input,
            compression,
            frame: Vec::new(),
            pos: 0,
            scratch: Vec::new(),
            len,
            consumed: 0,
            empty: None,
            _t: PhantomData,
        }
    }

    fn next_frame(&mut self) -> Result<bool> {
        let Some(raw) = self.next_stored()? else {
            return Ok(false);
        };
        match self.compression {
            Compression::None => std::mem::swap(&mut self.frame, &mut self.scratch),
            Compression::Lz4 => {
                self.frame.resize(raw, 0);
                let n = lz4_flex::block::decompress_into(&self.scratch, &mut self.frame)
                    .map_err(|e| corrupt(&format!("lz4: {e}")))?;
                if n != raw {
                    return Err(corrupt("frame length mismatch"));
                }
            }
        }
        self.pos = 0;
        Ok(true)
    }

    /// Checks every remaining frame's header, length and checksum without
    /// decoding a record (a cheap pass before trusting a stored block).
    pub fn verify(mut self) -> Result<()> {
        while self.next_stored()?.is_some() {}
        Ok(())
    }

    /// Reads the next frame's stored bytes into `scratch`, checked against its
    /// checksum; returns its raw length, or None at the exact end.
    fn next_stored(&mut self) -> Result<Option<usize>> {
        let left = self.len - self.consumed;
        if left == 0 {
            return Ok(None);
        }
        if left < HEADER as u64 {
            return Err(corrupt(&format!(
                "{left} bytes left at the end, less than a frame header"
            )));
        }
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                corrupt("the stream ends before its recorded length")
            }
            _ => FlintError::io("cannot read", "shuffle or spill file", e),
        };
        let mut hdr = [0u8; HEADER];
        self.input.read_exact(&mut hdr).map_err(io)?;
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let stored = word(0) as usize;
        let raw = word(4) as usize;
        let sum = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        if stored > MAX_FRAME || raw > MAX_FRAME {
            return Err(corrupt("frame larger than 256 MiB"));
        }
        if (HEADER + stored) as u64 > left {
            return Err(corrupt(&format!(
                "a frame of {stored} bytes overruns the stream's {left} remaining bytes"
            )));
        }
        if self.compression == Compression::None && stored != raw {
            return Err(corrupt("uncompressed frame with two different lengths"));
        }
        self.scratch.resize(stored, 0);
        self.input.read_exact(&mut self.scratch).map_err(io)?;
        self.consumed += (HEADER + stored) as u64;
        if checksum(&self.scratch, raw) != sum {
            return Err(corrupt("frame checksum mismatch"));
        }
        Ok(Some(raw))
    }

    /// The next record of a sized stream: the key, then its value's
    /// encoding behind its length (the map side of a sorted shuffle writes
    /// them so; see `writer`), the value's bytes left undecoded.
    pub fn next_sized<K: DeserializeOwned>(&mut self) -> Result<Option<(K, &[u8])>> {
        let Some((key, _, value)) = self.next_sized_with(|b| {
            let (k, rest) = codec::decode_prefix::<K>("shuffle record", b)?;
            Ok((k, b.len() - rest.len()))
        })?
        else {
            return Ok(None);
        };
        Ok(Some((key, &self.frame[value])))
    }

    /// As `next_sized`, with the key's encoding left undecoded too:
    /// `key_len` tells how long the encoding at the front of its input is
    /// (None: not a key's encoding).
    pub fn next_sized_raw(
        &mut self,
        key_len: impl FnOnce(&[u8]) -> Option<usize>,
    ) -> Result<Option<(&[u8], &[u8])>> {
        let Some(((), key, value)) = self.next_sized_with(|b| {
            key_len(b)
                .map(|n| ((), n))
                .ok_or_else(|| corrupt("a record's key is not a key's encoding"))
        })?
        else {
            return Ok(None);
        };
        Ok(Some((&self.frame[key], &self.frame[value])))
    }

    /// Reads the next sized record's key with `key` (what it makes of the
    /// key, and the key encoding's length) and finds the ranges of the key's
    /// and the value's bytes in the frame.
    #[allow(clippy::type_complexity)]
    fn next_sized_with<X>(
        &mut self,
        key: impl FnOnce(&[u8]) -> Result<(X, usize)>,
    ) -> Result<Option<(X, std::ops::Range<usize>, std::ops::Range<usize>)>> {
        while self.pos >= self.frame.len() {
            if !self.next_frame()? {
                return Ok(None);
            }
        }
        let key_start = self.pos;
        let (x, key_len) = key(&self.frame[key_start..])?;
        let key_end = key_start + key_len;
        if key_end > self.frame.len() {
            return Err(corrupt("a record's key overruns its frame"));
        }
        // The length is a `u64` as postcard encodes it (a varint).
        let (len, rest) =
            codec::decode_prefix::<u64>("shuffle record length", &self.frame[key_end..])?;
        let start = self.frame.len() - rest.len();
        // Records never span frames: the writer cuts frames between them.
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= self.frame.len())
        else {
            return Err(corrupt(&format!(
                "a record's value of {len} bytes overruns its frame"
            )));
        };
        self.pos = end;
        Ok(Some((x, key_start..key_end, start..end)))
    }

    pub fn next_record(&mut self) -> Result<Option<T>> {
        while self.pos >= self.frame.len() {
            if !self.next_frame()? {
                return Ok(None);
            }
        }
        // A type that decodes from no bytes at all encodes every value to
        // none: its records are marker bytes.
        let empty = *self.empty.get_or_insert_with(|| {
            codec::decode_prefix::<T>("shuffle record", &[]).is_ok_and(|(_, r)| r.is_empty())
        });
        if empty {
            if self.frame[self.pos] != EMPTY_RECORD {
                return Err(corrupt(
                    "a record of a type without bytes is not its marker",
                ));
            }
            self.pos += 1;
            return codec::decode::<T>("shuffle record", &[]).map(Some);
        }
        let (rec, rest) = codec::decode_prefix::<T>("shuffle record", &self.frame[self.pos..])?;
        self.pos = self.frame.len() - rest.len();
        Ok(Some(rec))
    }
}

/// Stands for a record whose encoding is empty (a value of unit types only),
/// which would otherwise leave no trace in its frame and be lost.
const EMPTY_RECORD: u8 = 0;

/// Appends a record's encoding to a frame's bytes (`EMPTY_RECORD` for an
/// empty one).
pub(crate) fn encode_record<T: Serialize + ?Sized>(rec: &T, out: &mut Vec<u8>) -> Result<()> {
    let before = out.len();
    codec::encode_into("shuffle record", rec, out)?;
    if out.len() == before {
        out.push(EMPTY_RECORD);
    }
    Ok(())
}

fn corrupt(what: &str) -> FlintError {
    FlintError::Codec {
        what: "shuffle or spill file",
        reason: format!("{what}; the file is corrupt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_codecs() {
        for c in [Compression::None, Compression::Lz4] {
            let mut w = FrameWriter::new(Vec::new(), c);
            for i in 0..50_000u32 {
                w.write(&(i, format!("v{i}"))).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let mut r = FrameReader::<_, (u32, String)>::new(&bytes[..], c, bytes.len() as u64);
            let mut n = 0;
            while let Some((i, s)) = r.next_record().unwrap() {
                assert_eq!(i, n);
                assert_eq!(s, format!("v{n}"));
                n += 1;
            }
            assert_eq!(n, 50_000);
        }
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut w = FrameWriter::new(Vec::new(), Compression::Lz4);
        for i in 0..1000u32 {
            w.write(&i).unwrap();
        }
        let mut bytes = w.into_inner().unwrap();
        for b in bytes.iter_mut().skip(8).take(20) {
            *b ^= 0x5a;
        }
        let mut r = FrameReader::<_, u32>::new(&bytes[..], Compression::Lz4, bytes.len() as u64);
        let mut saw_err = false;
        for _ in 0..2000 {
            match r.next_record() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    saw_err = true;
                    break;
                }
            }
        }
        assert!(saw_err);
        // Absurd lengths are refused before allocating.
        let mut huge = [0u8; HEADER];
        huge[..8].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]);
        let mut r = FrameReader::<_, u32>::new(&huge[..], Compression::Lz4, u64::MAX);
        assert!(r.next_record().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::util::fuzz_cases(256)))]
        /// Shuffle bytes will come from other processes: whatever bytes of a
        /// frame are flipped, reading ends in records or an error, never a panic
        /// or an out-of-bounds read in the decompressor.
        #[test]
        fn any_corruption_is_an_error_not_a_panic(
            flips in proptest::collection::vec((0usize..4096, 1u8..=255), 1..12),
            cut in 0usize..4096,
        ) {
            let mut w = FrameWriter::new(Vec::new(), Compression::Lz4);
            for i in 0..600u64 {
                w.write(&(i, format!("record {i}"))).unwrap();
            }
            let mut bytes = w.into_inner().unwrap();
            let n = bytes.len();
            for (at, x) in flips {
                bytes[at % n] ^= x;
            }
            bytes.truncate(cut.max(1).min(n));
            let mut r = FrameReader::<_, (u64, String)>::new(&bytes[..], Compression::Lz4, n as u64);
            for _ in 0..2000 {
                match r.next_record() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// A stream cut short yields a prefix of the records, then an error
        /// (never a wrong record, never a clean end, even at a frame boundary).
        #[test]
        fn a_truncated_stream_yields_a_prefix_then_an_error(cut in 0usize..1_000_000) {
            // About 100 KiB of records: two frames, so cuts land in either.
            let mut w = FrameWriter::new(Vec::new(), Compression::Lz4);
            for i in 0..6000u64 {
                w.write(&(i, format!("record {i}"))).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let cut = cut % bytes.len();
            let mut r = FrameReader::<_, (u64, String)>::new(&bytes[..cut], Compression::Lz4, bytes.len() as u64);
            let mut next = 0u64;
            let end = loop {
                match r.next_record() {
                    Ok(Some((i, s))) => {
                        proptest::prop_assert_eq!((i, s), (next, format!("record {next}")));
                        next += 1;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            proptest::prop_assert!(end.is_err(), "cut at {} of {} ended cleanly", cut, bytes.len());
            proptest::prop_assert!(next < 6000);
        }

        /// Any single flipped bit anywhere in the stream (header or payload,
        /// either codec) is an error, never a different or shorter list of records.
        #[test]
        fn any_flipped_bit_is_detected(at in 0usize..1_000_000, bit in 0u8..8, lz4 in proptest::bool::ANY) {
            let c = if lz4 { Compression::Lz4 } else { Compression::None };
            let mut w = FrameWriter::new(Vec::new(), c);
            for i in 0..6000u64 {
                w.write(&(i, format!("record {i}"))).unwrap();
            }
            let mut bytes = w.into_inner().unwrap();
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let mut r = FrameReader::<_, (u64, String)>::new(&bytes[..], c, bytes.len() as u64);
            let mut next = 0u64;
            let end = loop {
                match r.next_record() {
                    Ok(Some((i, s))) => {
                        proptest::prop_assert_eq!((i, s), (next, format!("record {next}")));
                        next += 1;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            proptest::prop_assert!(end.is_err(), "flip at byte {} went unnoticed", at);
        }
    }

    /// Frames of sized records (key, value length, value).
    fn sized(recs: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (k, v) in recs {
            codec::encode_into("t", k, &mut raw).unwrap();
            codec::encode_into("t", &(v.len() as u64), &mut raw).unwrap();
            raw.extend_from_slice(v);
        }
        let mut w = FrameWriter::new(Vec::new(), Compression::None);
        w.write_encoded(&raw).unwrap();
        w.into_inner().unwrap()
    }

    fn read_sized(bytes: &[u8]) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut r = FrameReader::<_, ()>::new(bytes, Compression::None, bytes.len() as u64);
        let mut out = Vec::new();
        while let Some((k, v)) = r.next_sized::<u32>()? {
            out.push((k, v.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn sized_records_read_back_and_bad_lengths_are_errors() {
        let recs: Vec<(u32, Vec<u8>)> = [0usize, 1, 127, 128, 300, 20_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| (i as u32, vec![i as u8; n]))
            .collect();
        assert_eq!(read_sized(&sized(&recs)).unwrap(), recs);
        // A value length past the frame's end; a length that never ends; a
        // length past 64 bits (it would wrap to 0).
        for raw in [
            vec![7u8, 0x05, 1, 2],
            vec![
                7u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            vec![
                7u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 1,
            ],
        ] {
            let mut w = FrameWriter::new(Vec::new(), Compression::None);
            w.write_encoded(&raw).unwrap();
            let bytes = w.into_inner().unwrap();
            let err = read_sized(&bytes).unwrap_err().to_string();
            assert!(err.contains("corrupt"), "{err}");
        }
    }

    #[test]
    fn a_record_larger_than_a_frame_is_refused_when_written() {
        let mut w = FrameWriter::new(Vec::new(), Compression::None);
        let big = crate::bytes::Bytes(vec![1u8; MAX_FRAME + 1]);
        let err = w.write(&big).unwrap_err().to_string();
        assert!(err.contains("larger than the 256 MiB"), "{err}");
    }

    #[test]
    fn records_without_bytes_are_counted_by_markers() {
        let mut w = FrameWriter::new(Vec::new(), Compression::None);
        for _ in 0..70_000 {
            w.write(&((), ())).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let mut r =
            FrameReader::<_, ((), ())>::new(&bytes[..], Compression::None, bytes.len() as u64);
        let mut n = 0;
        while r.next_record().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 70_000);
        // A byte that is not the marker (a frame of another type's records).
        let mut w = FrameWriter::new(Vec::new(), Compression::None);
        w.write_encoded(&[1, 0]).unwrap();
        let bytes = w.into_inner().unwrap();
        let mut r = FrameReader::<_, ()>::new(&bytes[..], Compression::None, bytes.len() as u64);
        let err = r.next_record().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn bytes_left_after_the_last_frame_are_an_error() {
        let mut w = FrameWriter::new(Vec::new(), Compression::Lz4);
        for i in 0..100u32 {
            w.write(&i).unwrap();
        }
        let mut bytes = w.into_inner().unwrap();
        let len = bytes.len() as u64;
        // A reader told of more bytes than the frames hold.
        bytes.extend_from_slice(&[0u8; 5]);
        let mut r = FrameReader::<_, u32>::new(&bytes[..], Compression::Lz4, len + 5);
        let mut n = 0;
        let err = loop {
            match r.next_record() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("clean end with 5 bytes unread"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 100);
        assert!(
            err.to_string().contains("less than a frame header"),
            "{err}"
        );
    }
}
