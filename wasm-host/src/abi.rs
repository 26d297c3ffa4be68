//! Constants and encodings of the proxy-wasm ABI 0.2.1 (proxy-wasm/spec, `abi-versions/v0.2.1`),
//! and access to the guest's memory.

use wasmtime::{AsContextMut, Caller};

use super::State;

/// `proxy_status_t`.
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const PARSE_FAILURE: i32 = 4;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// `proxy_buffer_type_t`.
pub mod buffer {
    pub const HTTP_REQUEST_BODY: i32 = 0;
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const GRPC_CALL_MESSAGE: i32 = 5;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// `proxy_map_type_t`.
pub mod map {
    pub const HTTP_REQUEST_HEADERS: i32 = 0;
    pub const HTTP_REQUEST_TRAILERS: i32 = 1;
    pub const HTTP_RESPONSE_HEADERS: i32 = 2;
    pub const HTTP_RESPONSE_TRAILERS: i32 = 3;
    pub const GRPC_CALL_INITIAL_METADATA: i32 = 4;
    pub const GRPC_CALL_TRAILING_METADATA: i32 = 5;
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// `proxy_metric_type_t`.
pub mod metric {
    pub const COUNTER: i32 = 0;
    pub const HISTOGRAM: i32 = 2;
}

pub type Pairs = Vec<(String, Vec<u8>)>;

/// The ABI's map serialization: a count, then key/value lengths, then each key and value with a
/// trailing NUL (all integers little-endian `u32`).
pub fn serialize_map(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The inverse of [`serialize_map`]; `None` when malformed. An empty input (or a single zero
/// byte) is an empty map, as the spec allows.
pub fn deserialize_map(bytes: &[u8]) -> Option<Pairs> {
    if bytes.is_empty() || bytes == [0] {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    let mut data = 4 + count.checked_mul(8)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let (kl, vl) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let key = bytes.get(data..data + kl)?;
        data += kl + 1;
        let value = bytes.get(data..data + vl)?;
        data += vl + 1;
        pairs.push((String::from_utf8(key.to_vec()).ok()?, value.to_vec()));
    }
    Some(pairs)
}

/// Guest memory through a host-function caller.
pub struct Guest<'a, 'b> {
    pub caller: &'a mut Caller<'b, State>,
}

impl Guest<'_, '_> {
    pub fn read(&mut self, ptr: i32, len: i32) -> Option<Vec<u8>> {
        let memory = self.caller.data().memory?;
        let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
        memory
            .data(&self.caller)
            .get(ptr..ptr.checked_add(len)?)
            .map(<[u8]>::to_vec)
    }

    pub fn read_str(&mut self, ptr: i32, len: i32) -> Option<String> {
        String::from_utf8(self.read(ptr, len)?).ok()
    }

    pub fn write(&mut self, ptr: i32, bytes: &[u8]) -> bool {
        let Some(memory) = self.caller.data().memory else {
            return false;
        };
        let ptr = ptr as u32 as usize;
        let data = memory.data_mut(self.caller.as_context_mut());
        match ptr
            .checked_add(bytes.len())
            .and_then(|end| data.get_mut(ptr..end))
        {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    pub fn write_u32(&mut self, ptr: i32, v: u32) -> bool {
        self.write(ptr, &v.to_le_bytes())
    }

    /// Copies `bytes` into memory the guest allocates (its `proxy_on_memory_allocate` or
    /// `malloc`) and writes the pointer and length to `ptr_out` / `len_out`, as every ABI
    /// function returning data does. The guest owns and frees that memory.
    pub fn give(&mut self, bytes: &[u8], ptr_out: i32, len_out: i32) -> i32 {
        let addr = if bytes.is_empty() {
            0
        } else {
            // Moved out for the call and back, not cloned: a clone of a typed function takes
            // a reference on its type in the engine's registry, which costs more than a copy.
            let Some(alloc) = self.caller.data_mut().alloc.take() else {
                return status::INTERNAL_FAILURE;
            };
            let allocated = alloc.call(&mut *self.caller, bytes.len() as i32);
            self.caller.data_mut().alloc = Some(alloc);
            match allocated {
                Ok(0) | Err(_) => return status::INTERNAL_FAILURE,
                Ok(addr) => addr,
            }
        };
        if (addr != 0 && !self.write(addr, bytes))
            || !self.write_u32(ptr_out, addr as u32)
            || !self.write_u32(len_out, bytes.len() as u32)
        {
            return status::INVALID_MEMORY_ACCESS;
        }
        status::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_as_the_spec_example() {
        let pairs: Pairs = vec![("a".into(), b"1".to_vec()), ("b".into(), b"22".to_vec())];
        let bytes = serialize_map(&pairs);
        assert_eq!(
            bytes,
            [
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b',
                0, b'2', b'2', 0
            ]
        );
        assert_eq!(deserialize_map(&bytes), Some(pairs));
        assert_eq!(deserialize_map(&[]), Some(Vec::new()));
        assert_eq!(deserialize_map(&[0]), Some(Vec::new()));
        assert_eq!(deserialize_map(&bytes[..bytes.len() - 3]), None);
        assert_eq!(deserialize_map(&[255, 255, 255, 255]), None);
    }
}
