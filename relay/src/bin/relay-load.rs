//! `relay-load`: load generator for the relay (see docs/BENCHMARKS.md).
fn main() {}
