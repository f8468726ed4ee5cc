//! The harness's pod watcher lives in the library (`winipam::scale::watch`), shared with the
//! scale probe (`winipam scale-probe`).

pub use winipam::scale::watch::*;
