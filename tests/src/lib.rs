//! Helpers for Shoal's workspace-wide tests: the dependency-layering check.

pub mod layering;
