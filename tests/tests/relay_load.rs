//! `relay-load` against a real relay, so the benchmark cannot silently
//! break again when the relay enforces a new rule: its billed mix (issue
//! 12) and its business mix (issue 13) run to the end, every template
//! approved through the admin API during setup, every signed ack answered
//! `Ok`; without the approval the relay refuses the first template and the
//! run fails with its code. The forwarder takes the same frames unapproved.
//! Issue 14's comparison runs too: franking and the ledger on against a
//! benchmark relay that bills, both off (signed delivery kept) against one
//! that appends nothing to the ledger, and everything off against an
//! unmetered one.

use crate::support;

use comptoir_bench::load::{self, LoadError, LoadOptions, Metering, TemplateApproval};
use comptoir_bench::metering::{self, RelayMetering};
use comptoir_protocol::proto::wire::ErrorCode;
use comptoir_relay::admin::client::AdminClient;
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
        metering: Metering::default(),
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
        assert_refused_as_unapproved(error);
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

/// Lines in the bills of every business with an approved template.
async fn bill_lines(admin: &AdminClient) -> u64 {
    let mut lines = 0;
    for template in admin
        .templates(Some("approved"))
        .await
        .expect("templates")
        .templates
    {
        let bill = admin
            .export_bill(&template.business, None, None, "json")
            .await
            .expect("bill");
        let bill: serde_json::Value = serde_json::from_str(&bill).expect("JSON bill");
        lines += bill["total_lines"].as_u64().expect("total_lines");
    }
    lines
}

/// A benchmark relay of `relay-load bench --compare-franking-ledger`, in
/// this process, and a client of its admin API.
async fn bench_relay(
    dir: &tempfile::TempDir,
    metering: RelayMetering,
) -> (metering::BenchRelay, AdminClient) {
    let data = dir.path().join("data");
    let relay = metering::start(data.clone(), metering)
        .await
        .expect("benchmark relay");
    let token = comptoir_relay::operator::read_admin_token(
        &data.join(comptoir_relay::operator::ADMIN_TOKEN_FILE),
    )
    .expect("admin token");
    let admin = AdminClient::new(relay.admin, token);
    (relay, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn franking_and_ledger_on_then_off_run_the_same_business_mix() {
    let on_dir = tempfile::tempdir().expect("temp dir");
    let off_dir = tempfile::tempdir().expect("temp dir");
    // On: every send franked, each template's signed ack answered Ok and
    // billed.
    let (on, on_admin) = bench_relay(&on_dir, RelayMetering::On).await;
    let report = load::run(
        on.address,
        metering::on(tiny(0, 20)),
        TemplateApproval::Admin(&on_admin),
    )
    .await
    .expect("franked and billed");
    assert_eq!((report.billed, report.service), (20, 20));
    assert_eq!(report.signed_acks, 20);
    assert_eq!(report.envelopes, 200);
    assert_eq!(bill_lines(&on_admin).await, 20, "one bill line a template");
    // The off traffic (nothing franked) is refused by a relay that franks.
    match load::run(
        on.address,
        metering::off(tiny(0, 20)),
        TemplateApproval::Admin(&on_admin),
    )
    .await
    {
        Err(LoadError::Refused { what, code, .. }) => {
            assert_eq!(what, "send");
            assert_eq!(code, ErrorCode::FrankingRequired as i32);
        }
        other => panic!("expected FRANKING_REQUIRED, got {other:?}"),
    }
    // Off: the same mix, nothing franked, each template's ack still
    // signed and answered Ok (nothing appended to the ledger in the mail
    // log: `signed_delivery::a_benchmark_relay_with_franking_and_the_ledger_off_still_checks_signed_delivery`).
    let (off, off_admin) = bench_relay(&off_dir, RelayMetering::FrankingAndLedgerOff).await;
    assert_eq!(off.metering, RelayMetering::FrankingAndLedgerOff);
    let report = load::run(
        off.address,
        metering::off(tiny(0, 20)),
        TemplateApproval::Admin(&off_admin),
    )
    .await
    .expect("not franked, signed and checked, not billed");
    assert_eq!((report.billed, report.service), (20, 20));
    assert_eq!(report.signed_acks, 20);
    assert_eq!(report.envelopes, 200);
    // Unmetered: nothing franked or signed, no bill line.
    let unmetered_dir = tempfile::tempdir().expect("temp dir");
    let (unmetered, admin) = bench_relay(&unmetered_dir, RelayMetering::Unmetered).await;
    let report = load::run(
        unmetered.address,
        metering::unmetered(tiny(0, 20)),
        TemplateApproval::Admin(&admin),
    )
    .await
    .expect("neither franked nor billed");
    assert_eq!((report.billed, report.service), (20, 20));
    assert_eq!(report.signed_acks, 0);
    assert_eq!(report.envelopes, 200);
    assert_eq!(bill_lines(&admin).await, 0, "no ledger");
}

/// `relay-load bench --business-percent P --unmetered` measures what the
/// business rules alone cost on a relay with franking and the ledger off:
/// that relay must still apply them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_franking_and_the_ledger_off_still_applies_the_business_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (off, _admin) = bench_relay(&dir, RelayMetering::Unmetered).await;
    let error = load::run(
        off.address,
        metering::unmetered(tiny(0, 20)),
        TemplateApproval::NotChecked,
    )
    .await
    .expect_err("an unapproved template is refused");
    assert_refused_as_unapproved(error);
}

/// The run failed on the relay's `TEMPLATE_NOT_APPROVED` refusal of a send.
fn assert_refused_as_unapproved(error: LoadError) {
    match error {
        LoadError::Refused { what, code, .. } => {
            assert_eq!(what, "send");
            assert_eq!(code, ErrorCode::TemplateNotApproved as i32);
        }
        other => panic!("expected the relay's refusal, got {other}"),
    }
}
