//! The one place the filter calls host functions directly rather than through the SDK.
//!
//! The SDK's shared-data and tick calls `panic!` on any status but the few they expect, and its
//! `Status` enum has no variant for `UNIMPLEMENTED` (12), which hosts without shared data or
//! ticks answer. Calling them through the SDK would therefore trap the VM on exactly the hosts
//! that lack them. These imports are the same `env` functions the SDK links, declared to return
//! the raw status.
#![allow(unsafe_code)]

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    #[link_name = "proxy_set_shared_data"]
    fn raw_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[link_name = "proxy_set_tick_period_milliseconds"]
    fn raw_set_tick_period_milliseconds(period: u32) -> u32;
}

const OK: u32 = 0;

/// Writes a probe key once: `true` when the host stores shared data.
pub fn shared_data_works() -> bool {
    const KEY: &[u8] = b"sluice.probe";
    const VALUE: &[u8] = b"1";
    // SAFETY: both pointers come from live slices with their exact lengths, the host only reads
    // them for the duration of the call, and the call returns nothing through memory.
    let status =
        unsafe { raw_set_shared_data(KEY.as_ptr(), KEY.len(), VALUE.as_ptr(), VALUE.len(), 0) };
    status == OK
}

/// Sets the tick period of the root context (the effective context must be a root or one of its
/// streams): `false` when the host has no ticks.
pub fn set_tick_period(period: std::time::Duration) -> bool {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: an integer argument and an integer result; no memory is shared.
    let status = unsafe { raw_set_tick_period_milliseconds(ms) };
    status == OK
}
