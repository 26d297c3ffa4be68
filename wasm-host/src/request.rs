//! What a test sends through the filter and what comes back: the client's [`Request`], the
//! [`Upstream`]'s answer, the filter's own [`LocalReply`], and the [`Exchange`] as a whole.

use std::time::Duration;

use super::abi::Pairs;

/// A reply the filter sent itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub details: String,
}

impl LocalReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What the upstream answers when the request reaches it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: u16,
    pub headers: Pairs,
    pub body: Vec<Vec<u8>>,
    pub trailers: Pairs,
    /// How long the upstream takes to answer: the host's clock moves by this much between the
    /// request going upstream and the response headers coming back ([`crate::Host::advance_clock`]).
    pub latency: Duration,
}

impl Upstream {
    pub fn ok() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            latency: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Answers after `latency` on the host's clock.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.as_bytes().to_vec()));
        self
    }

    /// One more body chunk.
    pub fn chunk(mut self, bytes: &[u8]) -> Self {
        self.body.push(bytes.to_vec());
        self
    }

    pub fn trailer(mut self, k: &str, v: &str) -> Self {
        self.trailers.push((k.into(), v.as_bytes().to_vec()));
        self
    }
}

/// A request from a client.
#[derive(Debug, Clone)]
pub struct Request {
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    pub upstream: Upstream,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            headers: vec![
                (":method".into(), method.as_bytes().to_vec()),
                (":path".into(), path.as_bytes().to_vec()),
                (":authority".into(), b"api.example.test".to_vec()),
                (":scheme".into(), b"http".to_vec()),
            ],
            body: Vec::new(),
            properties: vec![(
                vec!["source".into(), "address".into()],
                b"192.0.2.10:40000".to_vec(),
            )],
            upstream: Upstream::ok(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn header(mut self, k: &str, v: impl AsRef<[u8]>) -> Self {
        self.headers.push((k.into(), v.as_ref().to_vec()));
        self
    }

    pub fn property(mut self, path: &[&str], v: impl AsRef<[u8]>) -> Self {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.properties.retain(|(p, _)| *p != path);
        self.properties.push((path, v.as_ref().to_vec()));
        self
    }

    /// The client address as Envoy reports it (`source.address`).
    pub fn remote(self, addr: &str) -> Self {
        self.property(&["source", "address"], addr)
    }

    pub fn body(mut self, bytes: &[u8]) -> Self {
        self.body = bytes.to_vec();
        self
    }

    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = upstream;
        self
    }
}

/// How the exchange went.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Set when the filter answered instead of the upstream.
    pub local_reply: Option<LocalReply>,
    /// The request headers as the upstream received them; `None` when it was not reached.
    pub forwarded: Option<Pairs>,
    /// The response headers the client received from the upstream path.
    pub response_headers: Pairs,
}

impl Exchange {
    pub fn status(&self) -> u32 {
        match &self.local_reply {
            Some(r) => r.status,
            None => self
                .header(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        }
    }

    pub fn reply(&self) -> &LocalReply {
        self.local_reply
            .as_ref()
            .unwrap_or_else(|| panic!("no local reply: {self:?}"))
    }

    /// A response header the client got, from the local reply or the upstream path.
    pub fn header(&self, name: &str) -> Option<String> {
        if let Some(r) = &self.local_reply {
            return r.header(name).map(str::to_string);
        }
        find(&self.response_headers, name)
    }

    /// A request header as forwarded upstream.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        find(self.forwarded.as_ref()?, name)
    }
}

fn find(pairs: &Pairs, name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}
