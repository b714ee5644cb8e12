//! The pure heart of linkfarm: the desired-state types, the validation of the YAML file into them,
//! and the planner that turns "what should be" and "what is" into a list of actions.
//!
//! Nothing in this crate touches the disk, the clock or the network: the caller reads the config
//! text, observes the farm and passes "now". That keeps every decision testable with plain data and
//! forces the filesystem layer (`linkfarm-fs`) to be the only place where effects happen.
#![warn(missing_docs)]

pub mod config;
pub mod inbox;
pub mod names;
pub mod observe;
pub mod paths;
pub mod plan;
pub mod spec;
pub mod time;
pub mod web;

pub use config::{parse_config, ConfigError, Diagnostic, IdLookup};
pub use names::NameFilter;
pub use observe::{Child, LinkDirObs, Node, Observed, TargetKind, TargetObs};
pub use plan::{
    desired_links, desired_links_among, desired_pairs, plan, plan_names, Action, DesiredLink, FarmState,
    Finding, Op, Plan, Reason,
};
pub use spec::{Config, Entries, Entry, Farm, LinkStyle, OnConflict, Owner, Settings, Watcher};

/// Prefix of the temporary names linkfarm gives links while it swaps or removes them (SPEC §4).
pub const TEMP_PREFIX: &str = ".linkfarm-tmp.";
