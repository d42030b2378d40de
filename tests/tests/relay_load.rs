//! `relay-load` against a real relay, so the benchmark cannot silently
//! break again when the relay enforces a new rule: its billed mix (issue
//! 12) and its business mix (issue 13) run to the end, every template
//! approved through the admin API during setup, every signed ack answered
//! `Ok`; without the approval the relay refuses the first template and the
//! run fails with its code. The forwarder takes the same frames unapproved.

mod support;

use comptoir_bench::load::{self, LoadError, LoadOptions, TemplateApproval};
use comptoir_protocol::proto::wire::ErrorCode;
use support::{TIMEOUT, start_relay};

/// A tiny ring: 10 devices, 20 sends each.
fn tiny(billed_percent: u32, business_percent: u32) -> LoadOptions {
    LoadOptions {
        devices: 10,
        messages: 20,
        size: 64,
        window: 4,
        billed_percent,
        business_percent,
        template_percent: 50,
        timeout: TIMEOUT,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_billed_mix_runs_against_a_relay_that_enforces_approved_templates() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let report = load::run(relay.addr, tiny(10, 0), TemplateApproval::Admin(&admin))
        .await
        .expect("every billed send accepted and every signed ack answered Ok");
    assert_eq!(report.businesses, 1);
    assert_eq!(report.billed, 20);
    assert_eq!(report.signed_acks, 20);
    assert_eq!(report.service, 0);
    assert_eq!(report.envelopes, 200);
    // The relay holds the business's template as approved.
    let approved = admin.templates(Some("approved")).await.expect("templates");
    assert_eq!(approved.templates.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_business_mix_sends_templates_and_service_replies_inside_the_window() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let report = load::run(relay.addr, tiny(0, 20), TemplateApproval::Admin(&admin))
        .await
        .expect("every template and service reply accepted");
    assert_eq!(report.businesses, 2);
    assert_eq!(
        report.billed, 20,
        "every other send of a business a template"
    );
    assert_eq!(report.service, 20, "the others service replies");
    assert_eq!(report.signed_acks, 20);
    assert_eq!(report.envelopes, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_operators_approval_the_relay_refuses_and_the_run_fails() {
    let relay = start_relay().await;
    for options in [tiny(10, 0), tiny(0, 20)] {
        let error = load::run(relay.addr, options, TemplateApproval::NotChecked)
            .await
            .expect_err("an unapproved template is refused");
        match error {
            LoadError::Refused { what, code, .. } => {
                assert_eq!(what, "send");
                assert_eq!(code, ErrorCode::TemplateNotApproved as i32);
            }
            other => panic!("expected the relay's refusal, got {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_takes_the_same_frames_without_approval() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let forwarder = tokio::spawn(comptoir_bench::forwarder::run(listener));
    for (options, billed, service) in [(tiny(10, 0), 20, 0), (tiny(0, 20), 20, 20)] {
        let report = load::run(addr, options, TemplateApproval::NotChecked)
            .await
            .expect("the forwarder checks nothing");
        assert_eq!((report.billed, report.service), (billed, service));
        assert_eq!(report.signed_acks, 20);
        assert_eq!(report.envelopes, 200);
    }
    forwarder.abort();
}
