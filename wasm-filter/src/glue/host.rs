//! The host, through the SDK's `hostcalls` (which return `Result`), never its trait conveniences
//! (which unwrap). Header values are read as bytes: the SDK's string getters panic on non-UTF-8.

use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use crate::descriptor::RequestData;
use crate::shared::{SetError, SharedStore};

pub fn log(level: LogLevel, message: &str) {
    // Nothing useful to do when the host refuses a log line.
    let _ = hostcalls::log(level, message);
}

/// Wall-clock time in nanoseconds since the epoch (0 if the host cannot tell).
pub fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map, name).ok().flatten()
}

/// Sets (replacing any value) or, with `None`, removes a header.
pub fn set_header(map: MapType, name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(map, name, value) {
        log(
            LogLevel::Debug,
            &format!("sluice-filter: cannot set header {name}: {status:?}"),
        );
    }
}

/// Up to `size` bytes of a buffer; `None` when the host has none.
pub fn buffer(kind: BufferType, size: usize) -> Option<Vec<u8>> {
    if size == 0 {
        return Some(Vec::new());
    }
    hostcalls::get_buffer(kind, 0, size).ok().flatten()
}

pub fn property(path: &[String]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.iter().map(String::as_str).collect())
        .ok()
        .flatten()
}

/// proxy-wasm shared data: one store for all worker VMs of the proxy. Only used after
/// [`super::abi::shared_data_works`] said the host has it, since the SDK panics otherwise.
pub struct SharedData;

impl SharedStore for SharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas.unwrap_or(0))),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let cas = (cas != 0).then_some(cas);
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

/// The request as descriptors see it, each header read from the host at most once.
#[derive(Default)]
pub struct HostRequest {
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl RequestData for HostRequest {
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        if let Some((_, v)) = self.headers.iter().find(|(n, _)| n == name) {
            return v.clone();
        }
        let v = header(MapType::HttpRequestHeaders, name);
        self.headers.push((name.to_string(), v.clone()));
        v
    }

    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        property(path)
    }
}
