//! Where counters live: [`memory`] (in process, sharded, bounded; the embedded default) and
//! [`redis`] (one server, Sentinel or Cluster; one Lua script per request). Both implement
//! [`super::Store`] and pass one conformance suite; neither knows the layers above it.

pub mod memory;
pub mod redis;
