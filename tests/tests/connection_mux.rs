//! One device connection of the client library shared by many tasks,
//! against a real relay: every task gets the reply to its own request.

use crate::support;

use std::time::Duration;

use comptoir_bench::load::{self, LoadAccount};
use comptoir_bench::mux::{self, MuxOptions};
use support::{TIMEOUT, start_relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_share_one_connection_each_awaiting_its_own_reply() {
    let relay = start_relay().await;
    let sender = LoadAccount::generate();
    let recipient = LoadAccount::generate();
    for account in [&sender, &recipient] {
        load::connect(relay.addr, 0, account, true)
            .await
            .expect("register");
    }
    // mux::run checks that each `Accepted` names the message its own task
    // sent; 16 tasks keep up to 16 sends in flight on the one socket.
    let report = mux::run(
        relay.addr,
        &sender,
        recipient.id,
        MuxOptions {
            tasks: 16,
            messages: 320,
            size: 256,
            timeout: TIMEOUT,
        },
    )
    .await
    .expect("every send accepted");
    assert_eq!(report.sends, 320);
    assert_eq!(report.tasks, 16);
    assert!(report.elapsed > Duration::ZERO);
}
