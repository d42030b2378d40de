//! Storage-free forwarder (baseline).
