//! The crate's error enum: what can stop a simulation run (as opposed to what the run finds,
//! which is a verdict, not an error).

/// Why a seed could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options make no sense (e.g. `--nodes 2`).
    #[error("invalid options: {0}")]
    Config(String),
    /// The placement of the simulated cluster's layout failed.
    #[error("placement: {0}")]
    Placement(String),
    /// A simulated host or client failed, or turmoil refused a step.
    #[error("simulation: {0}")]
    Simulation(String),
    /// The simulation did not finish within its step bound (a hang in the node code or in a
    /// workload).
    #[error("simulation did not finish within {steps} steps ({what})")]
    Stuck {
        /// Steps run.
        steps: u64,
        /// What was still running.
        what: String,
    },
}
