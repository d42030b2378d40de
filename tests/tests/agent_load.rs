//! `relay-load agent` (docs/BENCHMARKS.md) in small against a real relay,
//! so the daemon benchmark cannot rot: customers write, the daemon's API
//! sends to each, every send's `sent` webhook arrives, and the same sends
//! go through the client library on the daemon's store.

use crate::support;

use comptoir_bench::agent_load::{self, AgentLoadOptions};
use support::client::url;
use support::{TIMEOUT, start_relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_benchmark_runs_to_the_end() {
    let relay = start_relay().await;
    let report = agent_load::run(
        &url(&relay),
        AgentLoadOptions {
            customers: 5,
            sends: 20,
            concurrency: 4,
            size: 64,
            timeout: TIMEOUT,
        },
    )
    .await
    .expect("every send accepted and every webhook delivered");
    assert_eq!(report.api.count, 20);
    assert_eq!(report.webhooks.count, 20);
    assert_eq!(report.library.count, 20);
    assert!(report.api.p99 >= report.api.p50 && report.api.per_sec > 0.0);
}
