//! The `dmx` command's integration tests, one binary (one link) for the whole suite.

mod chain_cli;
mod cli;
mod crash;
mod destinations;
mod diff_cli;
mod format12;
mod hygiene;
mod legacy_cli;
mod lossy_cli;
mod pt_cli;
mod support;
mod torch_cli;
