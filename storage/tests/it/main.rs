//! The storage crate's integration tests in one binary (one link instead of seven). Only
//! `map_budget.rs` has a binary of its own: the map budget it lowers is process-wide.
//! `tests/run-all.sh` fails if a `.rs` file here is not a module, so none is silently skipped.

mod common;

mod concurrency;
mod edge_cases;
mod known_corruption;
mod model;
mod power_cut;
mod process_kill;
mod regressions;
