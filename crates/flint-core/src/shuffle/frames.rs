//! Record streams in files: batches of postcard-encoded records, each batch
//! optionally lz4-compressed and prefixed by its lengths. Used by shuffle data files
//! and spill files alike.

use std::io::{Read, Write};
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::env::Compression;
use crate::error::{FlintError, Result};

const TARGET_FRAME: usize = 64 << 10;
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
        codec::encode_into("shuffle record", rec, &mut self.buf)?;
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
        let raw_len = raw.len() as u32;
        let io = |e| FlintError::io("cannot write", "shuffle or spill file", e);
        match self.compression {
            Compression::None => {
                self.out.write_all(&raw_len.to_le_bytes()).map_err(io)?;
                self.out.write_all(&raw_len.to_le_bytes()).map_err(io)?;
                self.out.write_all(raw).map_err(io)?;
                self.written += 8 + raw.len() as u64;
            }
            Compression::Lz4 => {
                let c = lz4_flex::block::compress(raw);
                self.out
                    .write_all(&(c.len() as u32).to_le_bytes())
                    .map_err(io)?;
                self.out.write_all(&raw_len.to_le_bytes()).map_err(io)?;
                self.out.write_all(&c).map_err(io)?;
                self.written += 8 + c.len() as u64;
            }
        }
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

    /// Copies frames written by another `FrameWriter` with the same compression.
    pub fn copy_frames(&mut self, src: &mut impl Read) -> Result<u64> {
        self.flush_frame()?;
        let n = std::io::copy(src, &mut self.out)
            .map_err(|e| FlintError::io("cannot copy", "spilled shuffle segment", e))?;
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

/// Reads records of type `T` back from a frame stream.
pub struct FrameReader<R: Read, T> {
    input: R,
    compression: Compression,
    frame: Vec<u8>,
    pos: usize,
    scratch: Vec<u8>,
    _t: PhantomData<fn() -> T>,
}

impl<R: Read, T: DeserializeOwned> FrameReader<R, T> {
    pub fn new(input: R, compression: Compression) -> Self {
        FrameReader {
            input,
            compression,
            frame: Vec::new(),
            pos: 0,
            scratch: Vec::new(),
            _t: PhantomData,
        }
    }

    fn next_frame(&mut self) -> Result<bool> {
        let mut hdr = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            let n = self
                .input
                .read(&mut hdr[got..])
                .map_err(|e| FlintError::io("cannot read", "shuffle or spill file", e))?;
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                return Err(corrupt("truncated frame header"));
            }
            got += n;
        }
        let stored = u32::from_le_bytes(hdr[..4].try_into().unwrap_or_default()) as usize;
        let raw = u32::from_le_bytes(hdr[4..].try_into().unwrap_or_default()) as usize;
        if stored > MAX_FRAME || raw > MAX_FRAME {
            return Err(corrupt("frame larger than 256 MiB"));
        }
        let io = |e| FlintError::io("cannot read", "shuffle or spill file", e);
        match self.compression {
            Compression::None => {
                self.frame.resize(raw, 0);
                self.input.read_exact(&mut self.frame).map_err(io)?;
            }
            Compression::Lz4 => {
                self.scratch.resize(stored, 0);
                self.input.read_exact(&mut self.scratch).map_err(io)?;
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

    pub fn next_record(&mut self) -> Result<Option<T>> {
        while self.pos >= self.frame.len() {
            if !self.next_frame()? {
                return Ok(None);
            }
        }
        let (rec, rest) = codec::decode_prefix::<T>("shuffle record", &self.frame[self.pos..])?;
        self.pos = self.frame.len() - rest.len();
        Ok(Some(rec))
    }
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
            let mut r = FrameReader::<_, (u32, String)>::new(&bytes[..], c);
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
        let mut r = FrameReader::<_, u32>::new(&bytes[..], Compression::Lz4);
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
        let huge = [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f];
        let mut r = FrameReader::<_, u32>::new(&huge[..], Compression::Lz4);
        assert!(r.next_record().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
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
            let mut r = FrameReader::<_, (u64, String)>::new(&bytes[..], Compression::Lz4);
            for _ in 0..2000 {
                match r.next_record() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// A stream cut short yields a prefix of the records, then an error
        /// (never a wrong record, never a silent clean end mid-frame).
        #[test]
        fn a_truncated_stream_yields_a_prefix_then_an_error(cut in 0usize..1_000_000) {
            // About 100 KiB of records: two frames, so cuts land in either.
            let mut w = FrameWriter::new(Vec::new(), Compression::Lz4);
            for i in 0..6000u64 {
                w.write(&(i, format!("record {i}"))).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let cut = cut % bytes.len();
            let mut r = FrameReader::<_, (u64, String)>::new(&bytes[..cut], Compression::Lz4);
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
            // Only a cut exactly between frames may end cleanly, and no cut
            // inside the first frame is one.
            if end.is_ok() {
                proptest::prop_assert!(cut == 0 || next > 0);
            }
            proptest::prop_assert!(next < 6000);
        }
    }
}
