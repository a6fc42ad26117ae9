//! The line-end scanner shared by the decoder and the encoder.

/// Calls `f` with the position of every CR and LF in `hay`, in order, looking at eight bytes
/// per step (SWAR: a zero byte of `word ^ pattern` marks a match, found without false
/// positives). One pass over the input, no call per line: cheaper than a `memchr2` per line
/// on the short lines of token streams.
#[inline]
pub(crate) fn for_each_line_end(hay: &[u8], mut f: impl FnMut(usize)) {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const LF: u64 = 0x0A0A_0A0A_0A0A_0A0A;
    const CR: u64 = 0x0D0D_0D0D_0D0D_0D0D;
    #[inline(always)]
    fn zero_bytes(v: u64) -> u64 {
        !(((v & LOW7) + LOW7) | v | LOW7)
    }
    let mut words = hay.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        let mut m = zero_bytes(x ^ LF) | zero_bytes(x ^ CR);
        while m != 0 {
            f(base + m.trailing_zeros() as usize / 8);
            m &= m - 1;
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b'\n' || b == b'\r' {
            f(base + i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_cr_and_lf() {
        let mut input = Vec::new();
        for i in 0..300u32 {
            input.push([b'a', b'\n', b'\r', 0x8A, 0x8D, 0xFF, 0, b':'][(i * 7 % 8) as usize]);
        }
        for start in 0..9 {
            let hay = &input[start..];
            let mut got = Vec::new();
            for_each_line_end(hay, |i| got.push(i));
            let want: Vec<usize> = (0..hay.len())
                .filter(|&i| hay[i] == b'\n' || hay[i] == b'\r')
                .collect();
            assert_eq!(got, want);
        }
    }
}
