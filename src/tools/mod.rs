//! The user's tooling around the engine: the command line, the demo and
//! its live view, the event generator, `cxpulse test`, `check`, `tail`,
//! `produce` / `read` and the local broker. The engine depends on none of
//! it.

pub mod bundled;
pub mod check;
pub mod cli;
pub mod dashboard;
pub mod demo;
pub mod generate;
pub mod local_broker;
pub mod tail;
pub mod testcase;
pub mod topic_io;
