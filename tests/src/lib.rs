//! Shared helpers for the end-to-end tests.

pub mod admin;
pub mod attack;
pub mod binary;
pub mod cluster;
pub mod etcd;
pub mod fault;
pub mod h2raw;
pub mod load;
pub mod nginx;
pub mod node;
pub mod redis;
pub mod rls;
pub mod sentinel;
pub mod sluice;
pub mod tcp_proxy;
pub mod tls;
pub mod upstream;
pub mod webhook;
pub mod xds;
