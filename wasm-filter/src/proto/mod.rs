//! `RateLimitRequest` / `RateLimitResponse` (envoy.service.ratelimit.v3) on the protobuf wire,
//! by hand: the filter needs a handful of fields, and a code generator plus runtime would double
//! the `.wasm`. The decoder trusts nothing: every length is checked, unknown fields are skipped by
//! wire type, and anything malformed is an error, never a panic.

use crate::check::{Answer, Code, DescriptorStatus, Limit};

/// One descriptor as sent: its entries and, for a post-response charge, its own `hits_addend`;
/// to renew or release a concurrency lease, the lease id (sent as one more entry,
/// [`crate::lease::LEASE_ENTRY`]) and `is_negative_hits` for the release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireDescriptor<'a> {
    pub entries: &'a [(String, String)],
    pub hits_addend: Option<u64>,
    pub lease: Option<&'a str>,
    pub negative_hits: bool,
}

/// Field numbers, from the `.proto` files.
mod field {
    // RateLimitRequest
    pub const DOMAIN: u32 = 1;
    pub const DESCRIPTORS: u32 = 2;
    // RateLimitDescriptor (envoy.extensions.common.ratelimit.v3)
    pub const ENTRIES: u32 = 1;
    pub const DESCRIPTOR_HITS_ADDEND: u32 = 3;
    pub const DESCRIPTOR_IS_NEGATIVE_HITS: u32 = 4;
    pub const ENTRY_KEY: u32 = 1;
    pub const ENTRY_VALUE: u32 = 2;
    // RateLimitResponse
    pub const OVERALL_CODE: u32 = 1;
    pub const STATUSES: u32 = 2;
    pub const RESPONSE_HEADERS_TO_ADD: u32 = 3;
    pub const REQUEST_HEADERS_TO_ADD: u32 = 4;
    pub const RAW_BODY: u32 = 5;
    // DescriptorStatus
    pub const CODE: u32 = 1;
    pub const CURRENT_LIMIT: u32 = 2;
    pub const LIMIT_REMAINING: u32 = 3;
    pub const DURATION_UNTIL_RESET: u32 = 4;
    // RateLimit
    pub const REQUESTS_PER_UNIT: u32 = 1;
    pub const UNIT: u32 = 2;
    // config.core.v3.HeaderValue
    pub const HEADER_KEY: u32 = 1;
    pub const HEADER_VALUE: u32 = 2;
    pub const HEADER_RAW_VALUE: u32 = 3;
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Encodes a `RateLimitRequest`. The request-level `hits_addend` stays 0 (meaning 1).
pub fn encode_request(domain: &str, descriptors: &[WireDescriptor<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 48 * descriptors.len());
    put_bytes(&mut out, field::DOMAIN, domain.as_bytes());
    let mut descriptor = Vec::new();
    let mut entry = Vec::new();
    for d in descriptors {
        descriptor.clear();
        for (k, v) in d.entries {
            entry.clear();
            put_bytes(&mut entry, field::ENTRY_KEY, k.as_bytes());
            put_bytes(&mut entry, field::ENTRY_VALUE, v.as_bytes());
            put_bytes(&mut descriptor, field::ENTRIES, &entry);
        }
        if let Some(lease) = d.lease {
            entry.clear();
            put_bytes(
                &mut entry,
                field::ENTRY_KEY,
                crate::lease::LEASE_ENTRY.as_bytes(),
            );
            put_bytes(&mut entry, field::ENTRY_VALUE, lease.as_bytes());
            put_bytes(&mut descriptor, field::ENTRIES, &entry);
        }
        if let Some(hits) = d.hits_addend {
            // google.protobuf.UInt64Value: present even when 0, which means "check only".
            let mut wrapper = Vec::new();
            if hits != 0 {
                put_key(&mut wrapper, 1, VARINT);
                put_varint(&mut wrapper, hits);
            }
            put_bytes(&mut descriptor, field::DESCRIPTOR_HITS_ADDEND, &wrapper);
        }
        if d.negative_hits {
            put_key(&mut descriptor, field::DESCRIPTOR_IS_NEGATIVE_HITS, VARINT);
            put_varint(&mut descriptor, 1);
        }
        put_bytes(&mut out, field::DESCRIPTORS, &descriptor);
    }
    out
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from(field << 3 | wire));
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Why an answer could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    VarintTooLong,
    BadWireType,
    NotUtf8,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated message",
            Self::VarintTooLong => "varint longer than 10 bytes",
            Self::BadWireType => "invalid wire type or field number",
            Self::NotUtf8 => "string field is not UTF-8",
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintTooLong)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
        self.take(n)
    }

    /// The next field number and wire type, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u32)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| DecodeError::BadWireType)?;
        if field == 0 {
            return Err(DecodeError::BadWireType);
        }
        Ok(Some((field, (key & 7) as u32)))
    }

    fn skip(&mut self, wire: u32) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            // Groups are long deprecated and never in these messages.
            _ => Err(DecodeError::BadWireType),
        }
    }

    /// A LEN field's bytes, or an error when the field has another wire type.
    fn expect_bytes(&mut self, wire: u32) -> Result<&'a [u8], DecodeError> {
        if wire == LEN {
            self.bytes()
        } else {
            Err(DecodeError::BadWireType)
        }
    }

    fn expect_varint(&mut self, wire: u32) -> Result<u64, DecodeError> {
        if wire == VARINT {
            self.varint()
        } else {
            Err(DecodeError::BadWireType)
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| DecodeError::NotUtf8)
}

/// Decodes a `RateLimitResponse`.
pub fn decode_response(buf: &[u8]) -> Result<Answer, DecodeError> {
    let mut r = Reader { buf };
    let mut answer = Answer::default();
    while let Some((f, wire)) = r.key()? {
        match f {
            field::OVERALL_CODE => answer.overall = Code::from_wire(r.expect_varint(wire)? as i32),
            field::STATUSES => answer.statuses.push(status(r.expect_bytes(wire)?)?),
            field::RESPONSE_HEADERS_TO_ADD => {
                answer.response_headers.push(header(r.expect_bytes(wire)?)?);
            }
            field::REQUEST_HEADERS_TO_ADD => {
                answer.request_headers.push(header(r.expect_bytes(wire)?)?);
            }
            field::RAW_BODY => answer.body = r.expect_bytes(wire)?.to_vec(),
            _ => r.skip(wire)?,
        }
    }
    // Sluice's OVER_LIMIT `raw_body` is a problem document; its status is the reply's.
    answer.problem = crate::json::problem_in(&answer.body);
    Ok(answer)
}

fn status(buf: &[u8]) -> Result<DescriptorStatus, DecodeError> {
    let mut r = Reader { buf };
    let mut s = DescriptorStatus::default();
    while let Some((f, wire)) = r.key()? {
        match f {
            field::CODE => s.code = Code::from_wire(r.expect_varint(wire)? as i32),
            field::CURRENT_LIMIT => s.current_limit = Some(limit(r.expect_bytes(wire)?)?),
            field::LIMIT_REMAINING => s.limit_remaining = r.expect_varint(wire)? as u32,
            field::DURATION_UNTIL_RESET => {
                s.duration_until_reset_ms = Some(duration_ms(r.expect_bytes(wire)?)?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(s)
}

fn limit(buf: &[u8]) -> Result<Limit, DecodeError> {
    let mut r = Reader { buf };
    let mut l = Limit::default();
    while let Some((f, wire)) = r.key()? {
        match f {
            field::REQUESTS_PER_UNIT => l.requests_per_unit = r.expect_varint(wire)? as u32,
            field::UNIT => l.unit = r.expect_varint(wire)? as i32,
            _ => r.skip(wire)?,
        }
    }
    Ok(l)
}

/// google.protobuf.Duration in whole milliseconds, rounded up; negative durations are 0.
fn duration_ms(buf: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader { buf };
    let (mut seconds, mut nanos) = (0i64, 0i32);
    while let Some((f, wire)) = r.key()? {
        match f {
            1 => seconds = r.expect_varint(wire)? as i64,
            2 => nanos = r.expect_varint(wire)? as i32,
            _ => r.skip(wire)?,
        }
    }
    let nanos = i64::from(nanos.clamp(0, 999_999_999));
    let ms = u64::try_from(seconds.max(0))
        .unwrap_or(0)
        .saturating_mul(1000);
    Ok(ms.saturating_add(u64::try_from((nanos + 999_999) / 1_000_000).unwrap_or(0)))
}

fn header(buf: &[u8]) -> Result<(String, String), DecodeError> {
    let mut r = Reader { buf };
    let (mut key, mut value, mut raw) = (String::new(), String::new(), None);
    while let Some((f, wire)) = r.key()? {
        match f {
            field::HEADER_KEY => key = utf8(r.expect_bytes(wire)?)?,
            field::HEADER_VALUE => value = utf8(r.expect_bytes(wire)?)?,
            field::HEADER_RAW_VALUE => raw = Some(utf8(r.expect_bytes(wire)?)?),
            _ => r.skip(wire)?,
        }
    }
    // `raw_value` wins when set, as in Envoy.
    Ok((key, raw.filter(|r| !r.is_empty()).unwrap_or(value)))
}

#[cfg(test)]
mod tests;
