//! Reliability and security campaigns (issue 6): crashes, chaos, faults, two daemons, hostile
//! input. Each runs a short version in CI; `LINKFARM_CAMPAIGN=full` runs the full size:
//!
//! ```sh
//! LINKFARM_CAMPAIGN=full cargo test --release -p linkfarm --test campaigns -- --nocapture --test-threads 1
//! ```
//!
//! Every campaign prints its figures (operations, seeds, crashes, faults, files lost) and a failing
//! seed prints how to replay it.

mod chaos;
mod common;
mod crash;
mod faults;
mod fuzz;
mod two_daemons;
