//! The one serialization format the engine uses for tasks, results and shuffle
//! records (postcard: compact, serde-driven). Kept behind two functions so that the
//! format can change in one place.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{FlintError, Result};

pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| FlintError::Codec {
        what,
        reason: e.to_string(),
    })
}

/// Appends the encoding of `value` to `out` (used for record batches).
pub fn encode_into<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<()> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).map_err(|e| FlintError::Codec {
        what,
        reason: e.to_string(),
    })?;
    Ok(())
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
