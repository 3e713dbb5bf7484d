//! Every black-box test of the `edgecap` binary, in one test binary (one link instead of six).
//! Each module is one area; `tests/run-all.sh` fails if a `.rs` file in `tests/` or
//! `tests/it/` is not a module here, so a new test file cannot be silently skipped.

mod support;

mod disk_full;
mod forward;
mod hardening;
mod history;
mod ingest;
mod notify;
mod tls;
mod torture;
