//! Cost of one rate-limiter call against a limiter holding many keys (the
//! prekey-fetch limiter's keys refill slowly, so it can hold hundreds of
//! thousands). Run: `cargo bench -p comptoir-relay --bench limiter`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use comptoir_relay::limits::RateLimiter;
use criterion::{Criterion, criterion_group, criterion_main};

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limiter_check");
    for keys in [1_000u64, 200_000] {
        // Slow refill (as prekey fetches): no bucket is full again during
        // the run, so every key stays held.
        let limiter = RateLimiter::new(10.0 / 3600.0, 10.0);
        let t0 = Instant::now();
        for key in 0..keys {
            let _ = limiter.check_at(&key, t0);
        }
        let mut next = keys;
        group.bench_function(format!("{keys}_keys_held"), |b| {
            b.iter(|| {
                // A new key each call, as a flood of distinct keys makes it.
                next += 1;
                black_box(limiter.check_at(&next, t0 + Duration::from_millis(1)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, limiter);
criterion_main!(benches);
