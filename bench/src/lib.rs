//! Comptoir benchmark tooling, kept out of the relay library so that the
//! relay ships neither: the storage-free forwarder the relay is measured
//! against and the load generator behind `relay-load` (docs/BENCHMARKS.md).
//!
//! Modules:
//! - [`agent_load`]: the business agent daemon's API and webhooks under
//!   load, beside the same sends through the client library.
//! - [`forwarder`]: the storage-free baseline (same frames, no storage).
//! - [`load`]: N devices sending and receiving through a relay.
//! - [`mux`]: many tasks sending through one client-library connection.
//! - [`attachment`]: one file encrypted, uploaded, downloaded and
//!   decrypted through a real relay, beside copying it on the same disk.
//! - [`client_mux`]: many tasks sending encrypted messages through one
//!   `Client`.
//! - [`metering`]: what franking and the ledger cost the relay: the
//!   business mix against a relay with both on and one with both off.

#![forbid(unsafe_code)]

pub mod agent_load;
pub mod attachment;
pub mod client_mux;
pub mod forwarder;
pub mod load;
pub mod metering;
pub mod mux;
