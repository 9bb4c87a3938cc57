//! The simulated world against kubesim: each sim with its real contract.

mod bootstrap;
mod chain;
mod common;
mod csi;
mod flux_git;
mod git_http;
mod helm;
mod storage;
mod workloads;
