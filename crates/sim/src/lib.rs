//! A launch-scale swarm simulator on the real scheduler: every simulated
//! player runs `shoal_scheduler::Download` and every node
//! `shoal_scheduler::Serve`, the state machines the launcher and the seed
//! run; neighbours come from the tracker's own sampler
//! (`shoal_types::sample`) and seeds' budgets from its own rule
//! (`shoal_api::budget_share`). [`world`] is the engine, [`scenario`] the
//! TOML a launch planner edits, [`output`] the figures, CSV and plot.
//!
//! `cargo run --release -p shoal-sim -- crates/sim/scenarios/launch.toml`.

mod event;
pub mod output;
pub mod scenario;
pub mod setup;
pub mod world;

pub use scenario::Scenario;
pub use world::{
    Bin, Churn, Node, Overlay, Player, Report, Setup, bound_at_egress, fluid_bound, mbit,
    player_serve, run, run_with, seed_serve,
};
