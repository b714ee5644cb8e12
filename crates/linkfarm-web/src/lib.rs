//! `linkfarm web`: an upload service that only feeds the inboxes of SPEC §10 (SPEC §13).
//!
//! A tus 1.0.0 server writes each upload into `dir/<folder>/` as `.linkfarm-web.<id>.part` and
//! renames it to its final name when the last byte is on disk; the daemon then decides about it
//! exactly as about an SMB upload. This crate never decides whether a model is accepted and never
//! writes outside the inbox folders it serves (and its own state directory). It refuses early
//! what the inbox would refuse, so nobody uploads 20 GB to be told the extension is wrong.
#![warn(missing_docs)]
// Handlers return an HTTP response as their early exit; boxing it would buy nothing per request.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod inbox;
pub mod meta;
mod page;
mod part;
pub mod server;
pub mod store;
pub mod tus;
pub mod users;

pub use server::{serve, App, Config};
