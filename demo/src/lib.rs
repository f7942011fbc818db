//! A whole Shoal in one process: the embedded tracker, a seed and players
//! running the real launcher, wired together on loopback ([`lab`]), and
//! `shoal-demo`, which distributes a sample build and a patch on it. The
//! player's `shoal` command does not link this crate, so a launcher carries
//! no tracker or seed server.

pub mod cli;
mod demo;
pub mod lab;

pub use demo::run;
