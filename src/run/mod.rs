//! `winipam run`: the controller process. Its flags, and the shutdown signal its tasks share.

pub mod flags;
pub mod shutdown;

pub use flags::RunArgs;
