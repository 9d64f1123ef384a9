//! The suite-level integration tests: one test binary (`cargo test --test
//! suite`), one folder per service plus the foundation, all on the harness
//! in `common`.

mod common;
mod decision;
mod foundation;
mod identity;
mod planning;
