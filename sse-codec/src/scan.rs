//! The line-end search shared by the decoder and the encoder.

const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
const LF: u64 = 0x0A0A_0A0A_0A0A_0A0A;
const CR: u64 = 0x0D0D_0D0D_0D0D_0D0D;

/// The bytes of `word` equal to CR or LF, as the high bit of each such byte (SWAR: a zero
/// byte of `word ^ pattern`, found without false positives).
#[inline(always)]
fn cr_lf_bytes(word: u64) -> u64 {
    #[inline(always)]
    fn zero_bytes(v: u64) -> u64 {
        !(((v & LOW7) + LOW7) | v | LOW7)
    }
    zero_bytes(word ^ LF) | zero_bytes(word ^ CR)
}

/// Lines up to this length are searched in registers (see [`find_line_end`]).
pub(crate) const SHORT_LINE: usize = 32;

/// Position of the first CR or LF in `hay`.
///
/// Lines in event streams are mostly short (token events are ~25 bytes), where a call into
/// a vectorised search costs more than the search: the first 32 bytes are checked eight at
/// a time in registers, and only a longer line goes to `memchr2`. When the caller expects a
/// long line (`long`: the previous one was), `memchr2` runs from the start.
#[inline]
pub(crate) fn find_line_end(hay: &[u8], long: bool) -> Option<usize> {
    if long {
        return memchr::memchr2(b'\n', b'\r', hay);
    }
    let mut base = 0;
    while base < SHORT_LINE {
        let Some(word) = hay.get(base..base + 8) else {
            return hay[base..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .map(|i| base + i);
        };
        let m = cr_lf_bytes(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
        if m != 0 {
            return Some(base + m.trailing_zeros() as usize / 8);
        }
        base += 8;
    }
    memchr::memchr2(b'\n', b'\r', &hay[base..]).map(|i| base + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_cr_or_lf_at_every_offset_and_length() {
        let alphabet = [b'a', 0x8A, 0x8D, 0xFF, 0, b':', 0x0B, 0x0C];
        for len in 0..70 {
            for at in 0..=len {
                for terminator in [b'\n', b'\r'] {
                    let mut hay: Vec<u8> = (0..len).map(|i| alphabet[i % alphabet.len()]).collect();
                    if at < len {
                        hay[at] = terminator;
                    }
                    let want = hay.iter().position(|&b| b == b'\n' || b == b'\r');
                    assert_eq!(find_line_end(&hay, false), want, "len {len} at {at}");
                    assert_eq!(find_line_end(&hay, true), want, "len {len} at {at}");
                }
            }
        }
    }
}
