//! The one serialization format the engine uses for tasks, results and shuffle
//! records (postcard: compact, serde-driven). Kept behind two functions so that the
//! format can change in one place.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{FlintError, Result};

thread_local! {
    /// The message of the last refusal by a value's own `Serialize` (see
    /// [`refuse`]): postcard keeps no custom error text.
    static REFUSAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A `Serialize` implementation's refusal to be encoded, whose message
/// reaches the encoding's error (postcard's own error would only say
/// "Serde Serialization Error").
pub fn refuse<E: serde::ser::Error>(message: String) -> E {
    let e = E::custom(&message);
    REFUSAL.with(|r| *r.borrow_mut() = Some(message));
    e
}

fn reason(e: postcard::Error) -> String {
    match REFUSAL.with(|r| r.borrow_mut().take()) {
        Some(m) if matches!(e, postcard::Error::SerdeSerCustom) => m,
        _ => e.to_string(),
    }
}

/// Forgets a refusal left by a serializer other than ours.
fn clear_refusal() {
    REFUSAL.with(|r| {
        if r.borrow().is_some() {
            *r.borrow_mut() = None;
        }
    });
}

pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    clear_refusal();
    postcard::to_stdvec(value).map_err(|e| FlintError::Codec {
        what,
        reason: reason(e),
    })
}

/// Appends the encoding of `value` to `out` (used for record batches).
pub fn encode_into<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<()> {
    clear_refusal();
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).map_err(|e| FlintError::Codec {
        what,
        reason: reason(e),
    })?;
    Ok(())
}

/// [`encode_into`] for a record's key or value: text and bytes (a Sort
/// record's key and value) are written as postcard writes them, their length
/// and then them, without going through serde (whose machinery took a tenth
/// of Sort's map-side CPU); any other type through serde.
#[inline]
pub fn encode_value_into<T: Serialize + 'static>(
    what: &'static str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<()> {
    match byte_content(value) {
        Some(b) => {
            put_varint(b.len() as u64, out);
            out.extend_from_slice(b);
            Ok(())
        }
        None => encode_into(what, value, out),
    }
}

/// The bytes of a text or byte value, whose encoding is their length and
/// then them (a `Vec<u8>` is a sequence of bytes, each encoded as one byte,
/// so it encodes the same).
#[inline]
fn byte_content<T: 'static>(value: &T) -> Option<&[u8]> {
    let v = value as &dyn std::any::Any;
    if let Some(b) = v.downcast_ref::<crate::Bytes>() {
        Some(&b.0)
    } else if let Some(b) = v.downcast_ref::<Vec<u8>>() {
        Some(b)
    } else if let Some(s) = v.downcast_ref::<String>() {
        Some(s.as_bytes())
    } else {
        v.downcast_ref::<crate::text::Word>().map(|w| w.as_bytes())
    }
}

#[inline]
fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| FlintError::Codec {
        what,
        reason: format!("{e} (input is corrupt or came from another binary)"),
    })
}

/// Decodes one value from the front of `bytes`, returning the rest.
pub fn decode_prefix<'a, T: DeserializeOwned>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<(T, &'a [u8])> {
    postcard::take_from_bytes(bytes).map_err(|e| FlintError::Codec {
        what,
        reason: format!("{e} (input is corrupt)"),
    })
}

/// Decodes one value that must take all of `bytes` (bytes left over mean the
/// length it was stored with does not match it: corrupt input).
pub fn decode_exact<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let (v, rest) = decode_prefix::<T>(what, bytes)?;
    if !rest.is_empty() {
        return Err(FlintError::Codec {
            what,
            reason: format!(
                "{} bytes left after the value (input is corrupt)",
                rest.len()
            ),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct path writes exactly what serde would, so readers decode
    /// either the same way.
    fn same<T: Serialize + 'static>(v: &T) {
        let mut fast = vec![7u8];
        encode_value_into("t", v, &mut fast).unwrap();
        let mut slow = vec![7u8];
        encode_into("t", v, &mut slow).unwrap();
        assert_eq!(fast, slow);
    }

    #[test]
    fn text_and_bytes_encode_as_serde_encodes_them() {
        for n in [0usize, 1, 23, 24, 127, 128, 129, 16_383, 16_384, 70_000] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let text: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            same(&crate::Bytes(bytes.clone()));
            same(&bytes);
            same(&text);
            same(&crate::text::Word::new(&text));
            same(&"é".repeat(n % 300));
        }
        // Other types still go through serde.
        same(&(3u64, 4u16));
    }
}
