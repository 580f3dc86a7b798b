//! # yeskv-check: histories and the checkers that judge them
//!
//! The simulator (`yeskv-sim`) and the real-process chaos runner (`scripts/chaos`) both record
//! what their clients did as a [`history::History`] and hand it, with the state read after the
//! cluster healed, to the checkers here. One set of checkers for both, so a bug found by one is
//! judged by the same rules as the other. See `docs/reliability.md` for what each rule promises.

pub mod history;
