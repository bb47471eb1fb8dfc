//! The push socket's frames: an 8-byte header (a little-endian int32
//! command, a little-endian int32 payload length), then the payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Both ways: keeps the connection alive. Any payload.
pub const HEARTBEAT: i32 = 0;
/// Client to server: the client's identity, JSON.
pub const REGISTER: i32 = 1;
/// Server to client: the client's token, JSON `{"token": …}`.
pub const TOKEN: i32 = 2;
/// Server to client: an event, JSON.
pub const EVENT: i32 = 3;

/// The largest payload accepted.
pub const MAX_PAYLOAD: usize = 64 * 1024;

const HEADER: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub command: i32,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(command: i32, payload: impl Into<Bytes>) -> Self {
        Self {
            command,
            payload: payload.into(),
        }
    }
}

/// Why a byte stream is not frames; the connection closes.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame announced {0} bytes, more than {MAX_PAYLOAD}")]
    TooLong(i64),
    #[error("a frame announced a negative length ({0})")]
    NegativeLength(i32),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frames from and to bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER {
            src.reserve(HEADER - src.len());
            return Ok(None);
        }
        let command = i32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        let length = i32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        let length = usize::try_from(length).map_err(|_| FrameError::NegativeLength(length))?;
        if length > MAX_PAYLOAD {
            return Err(FrameError::TooLong(length as i64));
        }
        if src.len() < HEADER + length {
            src.reserve(HEADER + length - src.len());
            return Ok(None);
        }
        src.advance(HEADER);
        let payload = src.split_to(length).freeze();
        Ok(Some(Frame { command, payload }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let length = i32::try_from(frame.payload.len())
            .map_err(|_| FrameError::TooLong(frame.payload.len() as i64))?;
        dst.reserve(HEADER + frame.payload.len());
        dst.put_i32_le(frame.command);
        dst.put_i32_le(length);
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(command: i32, length: i32) -> Vec<u8> {
        let mut bytes = command.to_le_bytes().to_vec();
        bytes.extend(length.to_le_bytes());
        bytes
    }

    #[test]
    fn frames_round_trip_and_arrive_in_pieces() {
        let mut bytes = BytesMut::new();
        let frames = [
            Frame::new(REGISTER, &b"{\"imei\":\"1\"}"[..]),
            Frame::new(HEARTBEAT, Bytes::new()),
            Frame::new(EVENT, vec![b'x'; MAX_PAYLOAD]),
        ];
        for frame in frames.clone() {
            FrameCodec.encode(frame, &mut bytes).unwrap();
        }
        // One byte at a time: nothing until a frame is whole.
        let mut input = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in bytes {
            input.put_u8(byte);
            if let Some(frame) = FrameCodec.decode(&mut input).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        assert!(input.is_empty());
    }

    #[test]
    fn the_header_is_little_endian() {
        let mut bytes = BytesMut::new();
        FrameCodec
            .encode(Frame::new(TOKEN, &b"abc"[..]), &mut bytes)
            .unwrap();
        assert_eq!(&bytes[..], b"\x02\x00\x00\x00\x03\x00\x00\x00abc");
    }

    #[test]
    fn a_length_over_64_kib_or_negative_is_refused_before_the_payload() {
        let mut over = BytesMut::from(&header(HEARTBEAT, MAX_PAYLOAD as i32 + 1)[..]);
        assert!(matches!(
            FrameCodec.decode(&mut over),
            Err(FrameError::TooLong(_))
        ));
        let mut negative = BytesMut::from(&header(REGISTER, -1)[..]);
        assert!(matches!(
            FrameCodec.decode(&mut negative),
            Err(FrameError::NegativeLength(-1))
        ));
    }
}
