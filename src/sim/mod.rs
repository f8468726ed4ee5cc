//! Simulation: a simulated EC2 and the seeded randomness it runs on. Everything runs on tokio
//! time, so under a paused runtime (`winipam simulate`, the tests) minutes of simulated time take
//! milliseconds and a seed reproduces a run.

pub mod ec2;
pub mod rng;
