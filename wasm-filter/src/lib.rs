//! The Sluice proxy-wasm filter.
//!
//! Only the crate exists so far: the filter itself (descriptor building, local pre-check, the gRPC
//! call to the server, rate-limit headers, fail-open/closed) is the subject of its own issue.
