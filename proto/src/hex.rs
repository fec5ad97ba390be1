//! Hex text of bytes (digests, serial numbers), for logs and records.

/// Hex form of a digest, for logs and records.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
