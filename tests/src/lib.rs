//! Shared helpers for the end-to-end tests.

pub mod admin;
pub mod etcd;
pub mod nginx;
pub mod redis;
pub mod rls;
pub mod sluice;
