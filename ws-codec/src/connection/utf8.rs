//! Incremental UTF-8 validation across fragment boundaries.

/// Validates text arriving in pieces; carries at most three bytes of an unfinished code point
/// from one piece to the next, so no byte is scanned twice.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    carry: [u8; 4],
    len: u8,
}

/// Width of the code point a lead byte starts, 0 if it cannot start one.
fn width(b: u8) -> usize {
    match b {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

/// Start of a possibly unfinished code point at the end of `d` (`d.len()` if none).
fn incomplete_tail_start(d: &[u8]) -> usize {
    let n = d.len();
    for i in 1..=n.min(3) {
        let b = d[n - i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let w = width(b);
        return if w > i { n - i } else { n };
    }
    n
}

impl Utf8Validator {
    /// Forgets any pending bytes.
    pub(crate) fn reset(&mut self) {
        self.len = 0;
    }

    /// Validates the next piece. `fin` marks the last piece of the message, which must not
    /// end inside a code point. Every validated complete `str` is appended to `out` if given.
    /// Fails as soon as a byte makes the text invalid, even when more pieces would follow.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        fin: bool,
        mut out: Option<&mut String>,
    ) -> Result<(), ()> {
        if self.len > 0 {
            let have = usize::from(self.len);
            let need = width(self.carry[0]);
            let take = need.saturating_sub(have).min(data.len());
            self.carry[have..have + take].copy_from_slice(&data[..take]);
            self.len += take as u8;
            data = &data[take..];
            match std::str::from_utf8(&self.carry[..usize::from(self.len)]) {
                Ok(s) => {
                    if let Some(o) = out.as_deref_mut() {
                        o.push_str(s);
                    }
                    self.len = 0;
                }
                Err(e) if e.error_len().is_none() => {
                    // still unfinished, so `data` is exhausted
                    return if fin { Err(()) } else { Ok(()) };
                }
                Err(_) => return Err(()),
            }
        }
        let (body, tail) = data.split_at(incomplete_tail_start(data));
        match simdutf8::basic::from_utf8(body) {
            Ok(s) => {
                if let Some(o) = out {
                    o.push_str(s);
                }
            }
            Err(_) => return Err(()),
        }
        if !tail.is_empty() {
            match std::str::from_utf8(tail) {
                Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => {}
                _ => return Err(()),
            }
            if fin {
                return Err(());
            }
            self.carry[..tail.len()].copy_from_slice(tail);
            self.len = tail.len() as u8;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(pieces: &[&[u8]]) -> Result<String, usize> {
        let mut v = Utf8Validator::default();
        let mut s = String::new();
        for (i, p) in pieces.iter().enumerate() {
            v.feed(p, i + 1 == pieces.len(), Some(&mut s))
                .map_err(|()| i)?;
        }
        Ok(s)
    }

    #[test]
    fn split_code_points() {
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(run(&[&euro[..1], &euro[1..2], &euro[2..]]).unwrap(), "€");
        assert_eq!(run(&[b"a", &euro[..2], &euro[2..], b"b"]).unwrap(), "a€b");
        let emoji = "😀".as_bytes();
        assert_eq!(run(&[&emoji[..3], &emoji[3..]]).unwrap(), "😀");
    }

    #[test]
    fn fails_fast() {
        // F4 90 can never start a valid code point (> U+10FFFF): fail at the first piece.
        assert_eq!(run(&[b"ok\xf4\x90", b"\x80\x80"]), Err(0));
        // CE BA E1 BD B9 CE BC CE B5 ED A0 80 (UTF-16 surrogate): fails in the piece with ED A0.
        assert_eq!(
            run(&[
                b"\xce\xba\xe1\xbd\xb9",
                b"\xce\xbc\xce\xb5\xed\xa0",
                b"\x80"
            ]),
            Err(1)
        );
        // an unfinished code point at the end of the message
        assert_eq!(run(&[b"a\xe2\x82"]), Err(0));
        assert_eq!(run(&[b"a", b"\xe2"]), Err(1));
        // an invalid continuation after a carried lead
        assert_eq!(run(&[b"\xe2", b"A"]), Err(1));
        assert_eq!(run(&[b"\xc0\xaf"]), Err(0));
    }

    proptest! {
        #[test]
        fn agrees_with_std_under_any_split(data in proptest::collection::vec(any::<u8>(), 0..40), cuts in proptest::collection::vec(0usize..40, 0..5)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&data[last..c]); last = c; }
            pieces.push(&data[last..]);
            let expect = std::str::from_utf8(&data).map(|s| s.to_owned()).ok();
            prop_assert_eq!(run(&pieces).ok(), expect);
        }

        #[test]
        fn valid_text_any_split(s in "\\PC{0,20}", cut in 0usize..80) {
            let b = s.as_bytes();
            let cut = cut.min(b.len());
            prop_assert_eq!(run(&[&b[..cut], &b[cut..]]).unwrap(), s);
        }
    }
}
