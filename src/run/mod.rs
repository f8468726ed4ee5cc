//! `winipam run`: the controller process and its flags (with the webhook configuration they
//! describe).

pub mod flags;
pub mod process;
mod webhook_args;

/// The shutdown signal is shared code (servers, leader election, the simulator use it); its
/// old path stays for callers outside the crate.
pub use crate::shutdown;

pub use flags::RunArgs;
