//! Helpers shared by the engine's integration tests (each test file is its
//! own crate and uses only some of them).

#![allow(dead_code)]

pub mod report;
pub mod stream;
