//! The pure frame layer (RFC 6455 §5.2): headers as plain values, decode and encode.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! Decoding checks only what a header alone can tell (opcode, control-frame rules, the 64-bit
//! length's top bit). Role-dependent checks (masking direction, RSV bits without a negotiated
//! extension, limits, fragment order) belong to the [`Connection`](crate::Connection).

use crate::error::FrameError;

/// Which end of the connection this machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Masks every frame it sends; rejects masked frames (RFC 6455 §5.1).
    Client,
    /// Sends unmasked frames; rejects unmasked frames.
    Server,
}
use std::fmt;
use std::ops::Deref;

/// The longest possible frame header: 2 + 8 (64-bit length) + 4 (masking key).
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (RFC 6455 §5.2). Reserved opcodes are a [`FrameError::ReservedOpcode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first frame of a text message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit value, or the reserved value back.
    pub fn from_u8(v: u8) -> Result<OpCode, FrameError> {
        Ok(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(FrameError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// `true` for Close, Ping and Pong (RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded or to-be-encoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// The three RSV bits, RSV1 as `0b100`, RSV2 as `0b010`, RSV3 as `0b001`.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `src`.
    ///
    /// Returns `Ok(None)` when `src` holds only part of a header, and `Ok(Some((header, n)))`
    /// with `n` the header's length in bytes otherwise. The payload is not examined.
    pub fn decode(src: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        if src.len() < 2 {
            return Ok(None);
        }
        let b0 = src[0];
        let b1 = src[1];
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if len7 > 125 {
                return Err(FrameError::ControlTooLong);
            }
        }
        let (len, mut n) = match len7 {
            126 => {
                if src.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([src[2], src[3]])), 4)
            }
            127 => {
                if src.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&src[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthOverflow);
                }
                (len, 10)
            }
            l => (u64::from(l), 2),
        };
        let mask = if masked {
            if src.len() < n + 4 {
                return Ok(None);
            }
            let k = [src[n], src[n + 1], src[n + 2], src[n + 3]];
            n += 4;
            Some(k)
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                len,
            },
            n,
        )))
    }

    /// The number of bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        let l = match self.len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        l + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header (never the payload) to `dst` and returns its length. The shortest
    /// length encoding is used, as RFC 6455 §5.2 requires.
    pub fn encode(&self, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
        dst[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.as_u8();
        let mbit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut n = match self.len {
            l @ 0..=125 => {
                dst[1] = mbit | l as u8;
                2
            }
            l @ 126..=0xFFFF => {
                dst[1] = mbit | 126;
                dst[2..4].copy_from_slice(&(l as u16).to_be_bytes());
                4
            }
            l => {
                dst[1] = mbit | 127;
                dst[2..10].copy_from_slice(&l.to_be_bytes());
                10
            }
        };
        if let Some(k) = self.mask {
            dst[n..n + 4].copy_from_slice(&k);
            n += 4;
        }
        n
    }

    /// Encodes into a [`HeaderBytes`].
    pub fn to_bytes(&self) -> HeaderBytes {
        let mut h = HeaderBytes {
            buf: [0; MAX_HEADER_LEN],
            len: 0,
        };
        h.len = self.encode(&mut h.buf) as u8;
        h
    }
}

/// An encoded frame header: at most [`MAX_HEADER_LEN`] bytes, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderBytes {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl HeaderBytes {
    /// No header: used by a [`Transmit`](crate::Transmit) whose payload already holds whole
    /// encoded frames.
    pub const EMPTY: HeaderBytes = HeaderBytes {
        buf: [0; MAX_HEADER_LEN],
        len: 0,
    };
}

impl Deref for HeaderBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for HeaderBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for HeaderBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeaderBytes({:02x?})", &**self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            len,
        }
    }

    /// RFC 6455 §5.7 examples: (bytes, header, header length).
    macro_rules! rfc_vector {
        ($name:ident, $bytes:expr, $hdr:expr, $n:expr) => {
            #[test]
            fn $name() {
                let bytes: &[u8] = &$bytes;
                let (got, n) = FrameHeader::decode(bytes).unwrap().unwrap();
                assert_eq!(got, $hdr);
                assert_eq!(n, $n);
                assert_eq!(&*got.to_bytes(), &bytes[..n]);
                // every strict prefix of the header is "need more"
                for cut in 0..n {
                    assert_eq!(
                        FrameHeader::decode(&bytes[..cut]).unwrap(),
                        None,
                        "cut {cut}"
                    );
                }
            }
        };
    }

    rfc_vector!(
        single_frame_unmasked_text,
        [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        h(true, OpCode::Text, None, 5),
        2
    );
    rfc_vector!(
        single_frame_masked_text,
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
        h(true, OpCode::Text, Some([0x37, 0xfa, 0x21, 0x3d]), 5),
        6
    );
    rfc_vector!(
        fragment_first_hel,
        [0x01, 0x03, 0x48, 0x65, 0x6c],
        h(false, OpCode::Text, None, 3),
        2
    );
    rfc_vector!(
        fragment_last_lo,
        [0x80, 0x02, 0x6c, 0x6f],
        h(true, OpCode::Continuation, None, 2),
        2
    );
    rfc_vector!(
        unmasked_ping_hello,
        [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        h(true, OpCode::Ping, None, 5),
        2
    );
    rfc_vector!(
        masked_pong_hello,
        [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
        h(true, OpCode::Pong, Some([0x37, 0xfa, 0x21, 0x3d]), 5),
        6
    );
    rfc_vector!(
        binary_256_bytes,
        [0x82, 0x7E, 0x01, 0x00],
        h(true, OpCode::Binary, None, 256),
        4
    );
    rfc_vector!(
        binary_64_kib,
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
        h(true, OpCode::Binary, None, 65536),
        10
    );

    #[test]
    fn masked_hello_payload_unmasks() {
        let bytes = [
            0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (hdr, n) = FrameHeader::decode(&bytes).unwrap().unwrap();
        let mut p = bytes[n..].to_vec();
        crate::apply_mask(&mut p, hdr.mask.unwrap(), 0);
        assert_eq!(p, b"Hello");
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            FrameHeader::decode(&[0x83, 0]),
            Err(FrameError::ReservedOpcode(3))
        );
        assert_eq!(
            FrameHeader::decode(&[0x8B, 0]),
            Err(FrameError::ReservedOpcode(0xB))
        );
        assert_eq!(
            FrameHeader::decode(&[0x09, 0]),
            Err(FrameError::FragmentedControl)
        );
        assert_eq!(
            FrameHeader::decode(&[0x89, 126]),
            Err(FrameError::ControlTooLong)
        );
        assert_eq!(
            FrameHeader::decode(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::LengthOverflow)
        );
    }

    #[test]
    fn rsv_bits_are_reported_not_rejected() {
        let (hdr, _) = FrameHeader::decode(&[0xC1, 0x00]).unwrap().unwrap();
        assert_eq!(hdr.rsv, 0b100);
        assert_eq!(
            FrameHeader::decode(&[0xF1, 0x00]).unwrap().unwrap().0.rsv,
            0b111
        );
    }

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong)
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(fin in any::<bool>(), rsv in 0u8..8, op in opcode(), mask in any::<Option<[u8; 4]>>(),
                                    len in prop_oneof![0u64..=125, 126u64..=65535, 65536u64..(1 << 63)]) {
            let (fin, len) = if op.is_control() { (true, len % 126) } else { (fin, len) };
            let hdr = FrameHeader { fin, rsv, opcode: op, mask, len };
            let bytes = hdr.to_bytes();
            prop_assert_eq!(bytes.len(), hdr.encoded_len());
            let (back, n) = FrameHeader::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(back, hdr);
            prop_assert_eq!(n, bytes.len());
        }

        #[test]
        fn decode_never_panics_and_consumes_at_most_input(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(Some((_, n))) = FrameHeader::decode(&data) {
                prop_assert!(n <= data.len());
            }
        }
    }
}
