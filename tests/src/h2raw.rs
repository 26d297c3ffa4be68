//! A raw HTTP/2 client for the adversarial tests: frames written byte by byte, so a test can send
//! what no well-behaved client library would (floods of CONTINUATION, SETTINGS or PING frames,
//! oversized frames, streams reset as soon as they are opened, messages that never finish).
//!
//! Header blocks are HPACK literals without indexing and without Huffman coding (RFC 7541 section
//! 6.2.2), which every decoder must accept.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// `/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`'s request headers.
pub fn grpc_headers() -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":scheme", "http".into()),
        (
            ":path",
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit".into(),
        ),
        (":authority", "sluice".into()),
        ("content-type", "application/grpc".into()),
        ("te", "trailers".into()),
    ]
}

/// A header block of HPACK literals.
pub fn header_block<N: AsRef<str>, V: AsRef<str>>(headers: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_string(&mut out, name.as_ref().as_bytes());
        hpack_string(&mut out, value.as_ref().as_bytes());
    }
    out
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    // A 7-bit prefix integer, Huffman bit clear.
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// One frame: the 9-byte header and the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(9 + payload.len());
    let len = payload.len() as u32;
    out.put_u8((len >> 16) as u8);
    out.put_u16(len as u16);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
    out.extend_from_slice(payload);
    out.to_vec()
}

/// A gRPC message prefix declaring `len` bytes, followed by `have` of them.
pub fn grpc_message_start(len: u32, have: usize) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend(std::iter::repeat_n(b'x', have));
    out
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The error code of the server's last GOAWAY, if it sent one.
    pub goaway: Option<u32>,
    /// Whether the server closed the socket (EOF or reset) within the wait.
    pub closed: bool,
    pub after: Duration,
}

/// A raw HTTP/2 connection.
pub struct RawH2 {
    pub tcp: TcpStream,
    started: Instant,
}

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub async fn connect(addr: std::net::SocketAddr) -> RawH2 {
        let mut raw = RawH2::connect_only(addr).await;
        raw.send(PREFACE).await;
        raw.send(&frame(SETTINGS, 0, 0, &[])).await;
        raw
    }

    /// Connects and sends nothing.
    pub async fn connect_only(addr: std::net::SocketAddr) -> RawH2 {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        RawH2 {
            tcp,
            started: Instant::now(),
        }
    }

    /// Writes `bytes`; `false` once the server has closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).await.is_ok()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp
            .write_all(bytes)
            .await
            .expect("write to the server");
    }

    /// HEADERS for `stream`, the whole block in one frame.
    pub fn headers_frame<N: AsRef<str>, V: AsRef<str>>(
        stream: u32,
        headers: &[(N, V)],
        end_stream: bool,
    ) -> Vec<u8> {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &header_block(headers))
    }

    /// Reads frames until the server closes the connection or `within` passes, noting its GOAWAY.
    pub async fn wait_closed(&mut self, within: Duration) -> Ended {
        let start = Instant::now();
        let mut goaway = None;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => {
                    return Ended {
                        goaway,
                        closed: false,
                        after: start.elapsed(),
                    };
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Ended {
                        goaway,
                        closed: true,
                        after: start.elapsed(),
                    };
                }
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some((kind, _flags, _stream, payload, used)) = parse_frame(&buf) {
                        if kind == GOAWAY && payload.len() >= 8 {
                            goaway = Some(u32::from_be_bytes([
                                payload[4], payload[5], payload[6], payload[7],
                            ]));
                        }
                        buf.drain(..used);
                    }
                }
            }
        }
    }

    /// Time since the connection was opened.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The first complete frame of `buf`: type, flags, stream, payload and the bytes it took.
pub fn parse_frame(buf: &[u8]) -> Option<(u8, u8, u32, Vec<u8>, usize)> {
    if buf.len() < 9 {
        return None;
    }
    let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
    if buf.len() < 9 + len {
        return None;
    }
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    Some((buf[3], buf[4], stream, buf[9..9 + len].to_vec(), 9 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_lengths_use_the_prefix_integer() {
        let mut out = Vec::new();
        hpack_string(&mut out, &[b'a'; 10]);
        assert_eq!(out[0], 10);
        let mut out = Vec::new();
        hpack_string(&mut out, &[b'a'; 200]);
        // 127 + 73: 0x7f, then 73.
        assert_eq!(&out[..2], &[127, 73]);
        assert_eq!(out.len(), 2 + 200);
    }

    #[test]
    fn frames_round_trip() {
        let f = frame(PING, ACK, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let (kind, flags, stream, payload, used) = parse_frame(&f).expect("a frame");
        assert_eq!((kind, flags, stream, used), (PING, ACK, 0, 17));
        assert_eq!(payload, [1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
