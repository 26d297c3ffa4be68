//! A proxy-wasm filter that does nothing: every request continues untouched. The benches run it
//! in the same host as Sluice's filter (`wasm-host/benches/filter.rs`), so the host's own cost
//! per exchange can be subtracted and the filter's own work shown.
//!
//! Built for wasm32 only, by `scripts/build-wasm.sh` (natively the crate is empty).
#![cfg(target_arch = "wasm32")]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pass))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}
