//! SPDY/3 name/value header blocks: the uncompressed layout, and the zlib
//! contexts (one per direction per connection, primed with the SPDY/3
//! dictionary) that compress every block on the wire.
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The zlib dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

/// Header names and values in wire order; names are lowercase on the wire and
/// several values of one name are joined by NUL.
pub type Headers = Vec<(String, String)>;

/// Errors of header block coding.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header block compression failed")]
    Compress(#[source] flate2::CompressError),
    #[error("header block decompression failed")]
    Decompress(#[source] flate2::DecompressError),
    #[error("header block is truncated")]
    Truncated,
    #[error("header name or value is not utf-8")]
    Utf8,
    #[error("header block too large")]
    TooLarge,
}

/// Looks a header up by (case-insensitive) name.
pub fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), HeaderError> {
    let len = u32::try_from(len).map_err(|_| HeaderError::TooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Serialises headers (names lowercased) before compression.
pub fn encode_block(headers: &Headers) -> Result<Vec<u8>, HeaderError> {
    let mut out = Vec::new();
    put_len(&mut out, headers.len())?;
    for (name, value) in headers {
        put_len(&mut out, name.len())?;
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        put_len(&mut out, value.len())?;
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeaderError> {
    if buf.len() < n {
        return Err(HeaderError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_u32(buf: &mut &[u8]) -> Result<usize, HeaderError> {
    let b = take(buf, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn take_str(buf: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(buf)?;
    let bytes = take(buf, len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| HeaderError::Utf8)
}

/// Parses a decompressed header block.
pub fn decode_block(mut buf: &[u8]) -> Result<Headers, HeaderError> {
    let count = take_u32(&mut buf)?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take_str(&mut buf)?;
        let value = take_str(&mut buf)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// The sending zlib context of a connection.
pub struct Compressor(Compress);

impl Compressor {
    pub fn new() -> Result<Self, HeaderError> {
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(DICTIONARY)
            .map_err(HeaderError::Compress)?;
        Ok(Self(c))
    }

    /// Compresses one header block, ending with a sync flush as SPDY requires.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, HeaderError> {
        let input = encode_block(headers)?;
        let mut out = Vec::with_capacity(input.len() + 64);
        let start = self.0.total_in();
        loop {
            let consumed = usize::try_from(self.0.total_in() - start).unwrap_or(usize::MAX);
            self.0
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(HeaderError::Compress)?;
            let consumed = usize::try_from(self.0.total_in() - start).unwrap_or(usize::MAX);
            if consumed >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(256);
        }
    }
}

/// The receiving zlib context of a connection.
pub struct Decompressor(Decompress);

impl Default for Decompressor {
    fn default() -> Self {
        Self(Decompress::new(true))
    }
}

/// Upper bound of one decompressed header block (a peer cannot make us grow past it).
const MAX_BLOCK: usize = 1 << 20;

impl Decompressor {
    /// Decompresses one header block and parses it.
    pub fn decompress(&mut self, input: &[u8]) -> Result<Headers, HeaderError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let start = self.0.total_in();
        loop {
            let consumed = usize::try_from(self.0.total_in() - start).unwrap_or(usize::MAX);
            let before = (self.0.total_in(), self.0.total_out());
            match self
                .0
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(HeaderError::Decompress)?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Decompress(e)),
            }
            let consumed = usize::try_from(self.0.total_in() - start).unwrap_or(usize::MAX);
            if consumed >= input.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() >= MAX_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            if (self.0.total_in(), self.0.total_out()) == before && out.len() < out.capacity() {
                return Err(HeaderError::Truncated);
            }
            out.reserve(1024);
        }
        decode_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
    }

    #[test]
    fn blocks_round_trip_through_one_connection_context() {
        let mut c = Compressor::new().unwrap();
        let mut d = Decompressor::default();
        let first = h(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ]);
        let second = h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        let a = c.compress(&first).unwrap();
        // zlib header with FDICT set, then the dictionary's adler32.
        assert_eq!(a[1] & 0x20, 0x20);
        assert_eq!(&a[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
        let b = c.compress(&second).unwrap();
        assert_eq!(d.decompress(&a).unwrap(), first);
        assert_eq!(d.decompress(&b).unwrap(), second);
    }

    #[test]
    fn names_are_lowercased_on_the_wire() {
        let block = encode_block(&h(&[("StreamType", "stdout")])).unwrap();
        assert_eq!(
            decode_block(&block).unwrap(),
            h(&[("streamtype", "stdout")])
        );
    }

    #[test]
    fn truncated_block_is_an_error() {
        let block = encode_block(&h(&[("a", "b")])).unwrap();
        assert!(matches!(
            decode_block(&block[..block.len() - 1]),
            Err(HeaderError::Truncated)
        ));
    }
}
