//! SPDY/3.1 frame layout: parses frames out of a byte buffer and serialises
//! them, compressing header blocks with the connection's zlib contexts.
use bytes::{BufMut, Bytes, BytesMut};

use super::header::{Compressor, Decompressor, HeaderError, Headers};

const VERSION: u16 = 3;
const CONTROL_BIT: u16 = 0x8000;
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const HEADER_LEN: usize = 8;
/// Frames are at most 2^24-1 bytes of payload.
const MAX_PAYLOAD: usize = 0x00ff_ffff;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type this codec does not know; skipped.
    Unknown {
        kind: u16,
    },
}

/// Errors of frame coding.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported spdy version {0}")]
    Version(u16),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("frame payload too large")]
    TooLarge,
    #[error("bad header block")]
    Header(#[source] HeaderError),
}

/// Frame encoder and decoder of one connection end (owns both zlib contexts).
pub struct Codec {
    compressor: Compressor,
    decompressor: Decompressor,
}

fn u24(len: usize) -> Result<[u8; 3], FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge);
    }
    let b = u32::try_from(len)
        .map_err(|_| FrameError::TooLarge)?
        .to_be_bytes();
    Ok([b[1], b[2], b[3]])
}

fn flag(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}

fn read_u32(b: &[u8], at: usize, what: &'static str) -> Result<u32, FrameError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(FrameError::Malformed(what))
}

impl Codec {
    pub fn new() -> Result<Self, FrameError> {
        Ok(Self {
            compressor: Compressor::new().map_err(FrameError::Header)?,
            decompressor: Decompressor::default(),
        })
    }

    /// Takes one whole frame off the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        let first = u16::from_be_bytes([head[0], head[1]]);
        if first & CONTROL_BIT == 0 {
            let stream_id = read_u32(&head, 0, "data")? & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                stream_id,
                fin,
                data: payload,
            }));
        }
        let version = first & !CONTROL_BIT;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let p = &payload[..];
        let frame = match kind {
            SYN_STREAM => {
                let stream_id = read_u32(p, 0, "SYN_STREAM")? & 0x7fff_ffff;
                let associated_to = read_u32(p, 4, "SYN_STREAM")? & 0x7fff_ffff;
                let priority = p.get(8).ok_or(FrameError::Malformed("SYN_STREAM"))? >> 5;
                let block = p.get(10..).ok_or(FrameError::Malformed("SYN_STREAM"))?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self
                        .decompressor
                        .decompress(block)
                        .map_err(FrameError::Header)?,
                }
            }
            SYN_REPLY | HEADERS => {
                let stream_id = read_u32(p, 0, "SYN_REPLY")? & 0x7fff_ffff;
                let block = p.get(4..).ok_or(FrameError::Malformed("SYN_REPLY"))?;
                let headers = self
                    .decompressor
                    .decompress(block)
                    .map_err(FrameError::Header)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => Frame::RstStream {
                stream_id: read_u32(p, 0, "RST_STREAM")? & 0x7fff_ffff,
                status: read_u32(p, 4, "RST_STREAM")?,
            },
            SETTINGS => {
                let count = read_u32(p, 0, "SETTINGS")? as usize;
                let mut entries = Vec::with_capacity(count.min(16));
                for i in 0..count {
                    let idf = read_u32(p, 4 + i * 8, "SETTINGS")?;
                    let value = read_u32(p, 8 + i * 8, "SETTINGS")?;
                    let [f, ..] = idf.to_be_bytes();
                    entries.push((f, idf & 0x00ff_ffff, value));
                }
                Frame::Settings { entries }
            }
            PING => Frame::Ping {
                id: read_u32(p, 0, "PING")?,
            },
            GOAWAY => Frame::GoAway {
                last_good_stream_id: read_u32(p, 0, "GOAWAY")? & 0x7fff_ffff,
                status: read_u32(p, 4, "GOAWAY").unwrap_or(0),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: read_u32(p, 0, "WINDOW_UPDATE")? & 0x7fff_ffff,
                delta: read_u32(p, 4, "WINDOW_UPDATE")? & 0x7fff_ffff,
            },
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    fn control(out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) -> Result<(), FrameError> {
        out.put_u16(CONTROL_BIT | VERSION);
        out.put_u16(kind);
        out.put_u8(flags);
        out.put_slice(&u24(payload.len())?);
        out.put_slice(payload);
        Ok(())
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut p = BytesMut::new();
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u8(flag(*fin, FLAG_FIN));
                out.put_slice(&u24(data.len())?);
                out.put_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                p.put_u32(*stream_id);
                p.put_u32(*associated_to);
                p.put_u8((priority & 0x7) << 5);
                p.put_u8(0);
                p.put_slice(
                    &self
                        .compressor
                        .compress(headers)
                        .map_err(FrameError::Header)?,
                );
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                Self::control(out, SYN_STREAM, flags, &p)
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                p.put_u32(*stream_id);
                p.put_slice(
                    &self
                        .compressor
                        .compress(headers)
                        .map_err(FrameError::Header)?,
                );
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                Self::control(out, kind, flag(*fin, FLAG_FIN), &p)
            }
            Frame::RstStream { stream_id, status } => {
                p.put_u32(*stream_id);
                p.put_u32(*status);
                Self::control(out, RST_STREAM, 0, &p)
            }
            Frame::Settings { entries } => {
                p.put_u32(u32::try_from(entries.len()).map_err(|_| FrameError::TooLarge)?);
                for (f, id, value) in entries {
                    p.put_u32(u32::from(*f) << 24 | (id & 0x00ff_ffff));
                    p.put_u32(*value);
                }
                Self::control(out, SETTINGS, 0, &p)
            }
            Frame::Ping { id } => Self::control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                p.put_u32(*last_good_stream_id);
                p.put_u32(*status);
                Self::control(out, GOAWAY, 0, &p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                p.put_u32(*stream_id);
                p.put_u32(*delta);
                Self::control(out, WINDOW_UPDATE, 0, &p)
            }
            Frame::Unknown { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers(&[("streamtype", "error"), ("port", "80")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                headers: headers(&[("a", "b")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 4096,
            },
        ]
    }

    #[test]
    fn every_frame_type_round_trips() {
        let mut tx = Codec::new().unwrap();
        let mut rx = Codec::new().unwrap();
        let mut wire = BytesMut::new();
        for f in all_frames() {
            tx.encode(&f, &mut wire).unwrap();
        }
        for f in all_frames() {
            assert_eq!(rx.decode(&mut wire).unwrap(), Some(f));
        }
        assert_eq!(rx.decode(&mut wire).unwrap(), None);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut tx = Codec::new().unwrap();
        let mut rx = Codec::new().unwrap();
        let mut wire = BytesMut::new();
        let f = Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"abcdef"),
        };
        tx.encode(&f, &mut wire).unwrap();
        let mut partial = BytesMut::from(&wire[..10]);
        assert_eq!(rx.decode(&mut partial).unwrap(), None);
        partial.extend_from_slice(&wire[10..]);
        assert_eq!(rx.decode(&mut partial).unwrap(), Some(f));
    }

    #[test]
    fn control_frame_header_layout_matches_the_spec() {
        let mut tx = Codec::new().unwrap();
        let mut wire = BytesMut::new();
        tx.encode(
            &Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(
            &wire[..],
            &[
                0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    /// The first frame of `kubectl port-forward` (v1.32, SPDY fallback), as
    /// sent on the wire: Go's zlib with the SPDY/3 dictionary.
    const KUBECTL_SYN_STREAM: &[u8] = &[
        0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3e, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x06, 0x06, 0x06,
        0xce, 0x22, 0x48, 0xfc, 0x64, 0x82, 0xd2, 0x2d, 0xa3, 0x01, 0x38, 0xe5, 0x95, 0x14, 0xa5,
        0x26, 0xe6, 0x42, 0x0b, 0x17, 0xd6, 0x54, 0x50, 0xd0, 0x43, 0x0a, 0xea, 0x22, 0x70, 0x9e,
        0xb0, 0x30, 0xb0, 0x30, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    #[test]
    fn syn_stream_captured_from_kubectl_decodes() {
        let mut rx = Codec::new().unwrap();
        let mut wire = BytesMut::from(KUBECTL_SYN_STREAM);
        let Some(Frame::SynStream {
            stream_id,
            fin,
            headers,
            ..
        }) = rx.decode(&mut wire).unwrap()
        else {
            panic!("not a SYN_STREAM");
        };
        assert_eq!(stream_id, 1);
        assert!(!fin);
        assert!(wire.is_empty());
        let get = |n| super::super::header::get(&headers, n);
        assert_eq!(get("streamtype"), Some("error"));
        assert_eq!(get("port"), Some("8080"));
        assert_eq!(get("requestid"), Some("0"));
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut rx = Codec::new().unwrap();
        let mut wire = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(rx.decode(&mut wire), Err(FrameError::Version(2))));
    }
}
