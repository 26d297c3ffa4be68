//! Shared helpers for the end-to-end tests.

pub mod nginx;
pub mod redis;
pub mod rls;
pub mod sluice;
