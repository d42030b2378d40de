//! Comptoir blind relay.
