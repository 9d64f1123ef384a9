//! The suite-level integration tests: one test binary (`cargo test --test
//! suite`), one module per area, all on the harness in `common`.

mod common;
mod foundation;
