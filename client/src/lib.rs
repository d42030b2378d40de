//! Comptoir client library.
