//! The end-to-end tests, one module per feature, built as one test
//! binary: a real relay on 127.0.0.1:0 and real clients. One binary
//! instead of one per file keeps a clean build's disk use and link time
//! down (each binary links the whole workspace); `cargo test -p
//! comptoir-tests -- labels::` runs one module.

mod support;

mod abuse_limits;
mod accept_ids;
mod admin_api;
mod agent_daemon;
mod agent_documents;
mod agent_inbox;
mod agent_link;
mod agent_load;
mod agent_two_daemons;
mod attachments;
mod auth_and_keys;
mod bad_input_and_ops;
mod bills;
mod business_cli;
mod click_to_chat;
mod client_adversarial;
mod client_chat;
mod client_cli;
mod client_concurrent;
mod client_devices;
mod client_hostile;
mod client_identity;
mod client_quarantine;
mod client_reconnect;
mod client_rekey;
mod client_rekey_storm;
mod client_relay_origin;
mod client_signed_prekeys;
mod client_templates;
mod connection_mux;
mod consent;
mod consent_cli;
mod consent_requests;
mod delivery;
mod directory_names;
mod envelope_bounds;
mod first_contacts;
mod franking;
mod interactive;
mod labels;
mod message_requests;
mod receipts;
mod relay_load;
mod rule_checks;
mod security_state;
mod signed_delivery;
mod status;
mod templates;
mod tiers;
mod timeouts_and_tls_files;
mod tui_business;
mod tui_relay;
mod verified_business;
mod window;
