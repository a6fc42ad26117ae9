//! Payload masking (RFC 6455 §5.3).

/// XORs `buf` with the masking `key`, as if `buf` started at byte `offset` of the payload.
///
/// Masking and unmasking are the same operation. `offset` lets a payload be masked in pieces:
/// masking `a` at offset 0 and then `b` at offset `a.len()` equals masking `a ++ b` at once.
///
/// Works eight bytes at a time in safe code (the loop auto-vectorizes); there is no `unsafe`.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let rot = (offset % 4) as u32;
    let key = u32::from_le_bytes(key).rotate_right(8 * rot);
    let kb = key.to_le_bytes();
    let key64 = u64::from_le_bytes([kb[0], kb[1], kb[2], kb[3], kb[0], kb[1], kb[2], kb[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_le_bytes(w) ^ key64;
        c.copy_from_slice(&v.to_le_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= kb[i & 3];
    }
}

/// The plain byte-at-a-time form, the reference the fast one is tested against.
#[cfg(test)]
pub(crate) fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut b = *b"Hello";
        apply_mask(&mut b, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(b, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    proptest! {
        #[test]
        fn matches_bytewise(data in proptest::collection::vec(any::<u8>(), 0..100), key in any::<[u8; 4]>(), off in 0usize..8) {
            let mut a = data.clone();
            let mut b = data.clone();
            apply_mask(&mut a, key, off);
            apply_mask_bytewise(&mut b, key, off);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn split_masking_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..100), key in any::<[u8; 4]>(), cut in 0usize..100) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut parts = data.clone();
            let (x, y) = parts.split_at_mut(cut);
            apply_mask(x, key, 0);
            apply_mask(y, key, cut);
            prop_assert_eq!(whole, parts);
        }
    }
}
