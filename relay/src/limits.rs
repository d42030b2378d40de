//! Token-bucket rate limiting, keyed by account or by remote address, and
//! the count of open connections per address.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Its place in [`Buckets::by_full`]: when it will be full again.
    full_at: (Instant, u64),
}

/// The buckets and, ordered by the time each is full again, their keys: a
/// full bucket is the same as no bucket, so it is dropped then, one
/// `O(log n)` step each, and no call ever scans the whole table.
#[derive(Debug)]
struct Buckets<K> {
    by_key: HashMap<K, Bucket>,
    by_full: BTreeMap<(Instant, u64), K>,
    /// Tie-breaker for buckets full at the same instant.
    next: u64,
}

/// A token bucket per key: `rate` tokens per second, at most `burst`.
///
/// Each call costs `O(log n)` in the number of keys held: buckets are kept
/// only until they are full again, and dropped in that order.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets<K>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter; a `rate` of 0 or less disables it.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                by_full: BTreeMap::new(),
                next: 0,
            }),
        }
    }

    /// Take one token for `key`. `Err(ms)` says when one will be available.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// Keys held (buckets not yet full again).
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`RateLimiter::check`] at the time `now` (tests, benchmarks).
    #[doc(hidden)]
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), u64> {
        self.check_all_at(std::slice::from_ref(key), now)
    }

    /// Whether `key` has a token now, taking none: `Err(ms)` says when it
    /// will (to refuse before spending another limiter's token).
    pub fn peek(&self, key: &K) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let tokens = self.tokens_at(buckets.by_key.get(key), Instant::now());
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err((((1.0 - tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }

    /// Take one token for each of `keys` (distinct), or none at all:
    /// `Err(ms)` says when every one of them will have a token again.
    pub fn check_all(&self, keys: &[K]) -> Result<(), u64> {
        self.check_all_at(keys, Instant::now())
    }

    /// [`RateLimiter::check_all`] at the time `now` (tests).
    #[doc(hidden)]
    pub fn check_all_at(&self, keys: &[K], now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = &mut *guard;
        // Drop the buckets that are full by now.
        while let Some(entry) = buckets.by_full.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let gone = entry.remove();
            buckets.by_key.remove(&gone);
        }
        // Every key is checked before any token is taken.
        let lowest = keys
            .iter()
            .map(|key| self.tokens_at(buckets.by_key.get(key), now))
            .fold(self.burst, f64::min);
        if lowest < 1.0 {
            let wait = (1.0 - lowest) / self.rate;
            return Err((wait * 1000.0).ceil() as u64);
        }
        for key in keys {
            let tokens = self.tokens_at(buckets.by_key.get(key), now) - 1.0;
            if let Some(old) = buckets.by_key.get(key) {
                buckets.by_full.remove(&old.full_at);
            }
            let refill = Duration::try_from_secs_f64((self.burst - tokens) / self.rate)
                .unwrap_or(Duration::MAX);
            let full = now
                .checked_add(refill)
                .unwrap_or(now + Duration::from_secs(1 << 40));
            let bucket = Bucket {
                tokens,
                updated: now,
                full_at: (full, buckets.next),
            };
            buckets.next = buckets.next.wrapping_add(1);
            buckets.by_full.insert(bucket.full_at, key.clone());
            buckets.by_key.insert(key.clone(), bucket);
        }
        Ok(())
    }

    /// The tokens `bucket` (none: a full one) holds at `now`.
    fn tokens_at(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        match bucket {
            Some(bucket) => {
                let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
                (bucket.tokens + elapsed * self.rate).min(self.burst)
            }
            None => self.burst,
        }
    }
}

/// The key limits count an address under: an IPv4 address as it is, an
/// IPv6 address by its /64 (one customer's network; a single host can use
/// every address in it), an IPv4-mapped IPv6 address as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    prefix_key(ip, 32, 64)
}

/// `ip` reduced to its first `v4_bits` (IPv4) or `v6_bits` (IPv6) bits.
pub fn prefix_key(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> IpAddr {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - v4_bits.min(32)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - v6_bits.min(128)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Open connections per [`address_key`], capped at accept time (before
/// any handshake), so one address cannot hold every file descriptor.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's place under [`PerAddress`]; freed on drop.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// At most `max` open connections per address; 0 disables the cap.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Take a place for a connection from `ip`, or `None` if its address
    /// (or /64) already holds the maximum.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Connections open from `ip`'s address (or /64).
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&address_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_refused_check_of_several_keys_takes_no_token() {
        let limiter = RateLimiter::new(1.0, 2.0);
        let now = Instant::now();
        assert!(limiter.check_all_at(&["a", "b"], now).is_ok());
        assert!(limiter.check_at(&"b", now).is_ok());
        assert_eq!(limiter.check_all_at(&["a", "b"], now), Err(1000));
        // "a" kept its last token through the refusal.
        assert!(limiter.check_at(&"a", now).is_ok());
        assert_eq!(limiter.check_at(&"a", now), Err(1000));
        // Refilled: both again.
        let later = now + Duration::from_millis(1000);
        assert!(limiter.check_all_at(&["a", "b"], later).is_ok());
    }

    #[test]
    fn a_peek_takes_no_token() {
        let limiter = RateLimiter::new(0.001, 1.0);
        for _ in 0..3 {
            assert!(limiter.peek(&"a").is_ok());
        }
        assert!(limiter.check(&"a").is_ok());
        assert!(limiter.peek(&"a").is_err());
    }

    #[test]
    fn connections_are_capped_per_address_and_per_ipv6_64() {
        let per = PerAddress::new(2);
        let a: IpAddr = "127.0.0.2"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let first = per.admit(a);
        let second = per.admit(a);
        assert!(first.is_some() && second.is_some());
        assert!(per.admit(a).is_none());
        assert!(per.admit(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))).is_some());
        drop(first);
        assert!(
            per.admit(a).is_some(),
            "a closed connection frees its place"
        );
        let v6 = |s: &str| {
            s.parse::<IpAddr>()
                .unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST))
        };
        let _x = per.admit(v6("2001:db8:1:2::1"));
        let _y = per.admit(v6("2001:db8:1:2:ffff::9"));
        assert!(per.admit(v6("2001:db8:1:2::77")).is_none(), "same /64");
        assert!(per.admit(v6("2001:db8:1:3::1")).is_some());
        assert_eq!(
            address_key(v6("::ffff:10.0.0.1")),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            prefix_key(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 24, 48),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 0))
        );
    }

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(&1u8, t0).is_ok());
        }
        let wait = limiter.check_at(&1u8, t0);
        assert_eq!(wait, Err(100));
        assert!(limiter.check_at(&2u8, t0).is_ok(), "keys are independent");
        assert!(
            limiter
                .check_at(&1u8, t0 + Duration::from_millis(100))
                .is_ok()
        );
        assert!(RateLimiter::new(0.0, 1.0).check_at(&1u8, t0).is_ok());
    }

    /// A limiter holding 200,000 keys still answers each key by its own
    /// bucket, and drops every bucket once it is full again, without
    /// waiting for a size threshold (the old limiter kept full buckets
    /// until it held 100,000 keys, then rescanned them all on every call).
    #[test]
    fn a_full_limiter_answers_and_drops_buckets_once_full_again() {
        // 2 tokens a second, burst 4: a key that took one token is full
        // again after 0.5 s, one that took all four after 2 s.
        let limiter = RateLimiter::new(2.0, 4.0);
        let t0 = Instant::now();
        for key in 0..200_000u32 {
            assert!(limiter.check_at(&key, t0).is_ok());
        }
        assert_eq!(limiter.len(), 200_000);
        for _ in 0..3 {
            assert!(limiter.check_at(&7, t0).is_ok());
        }
        assert_eq!(limiter.check_at(&7, t0), Err(500), "key 7 is empty");
        assert!(limiter.check_at(&8, t0).is_ok(), "key 8 has tokens left");
        // Past 0.5 s every key that took one token is full again: gone.
        let later = t0 + Duration::from_millis(600);
        assert!(limiter.check_at(&7, later).is_ok(), "1.2 tokens back");
        assert!(limiter.check_at(&7, later).is_err(), "0.2 left");
        assert_eq!(limiter.len(), 2, "keys 7 and 8 are kept, the rest dropped");
        // Key 8 took two tokens: full again after 1 s, then forgotten;
        // key 7 is not full before 2.5 s.
        let much_later = t0 + Duration::from_millis(1500);
        assert!(limiter.check_at(&9, much_later).is_ok());
        assert_eq!(limiter.len(), 2, "keys 7 and 9");
        // A forgotten key starts again with a whole burst.
        for _ in 0..4 {
            assert!(limiter.check_at(&8, much_later).is_ok());
        }
        assert!(limiter.check_at(&8, much_later).is_err());

        // Few keys: full buckets are dropped all the same.
        let small = RateLimiter::new(2.0, 4.0);
        for key in 0..10u32 {
            assert!(small.check_at(&key, t0).is_ok());
        }
        assert!(small.check_at(&100, later).is_ok());
        assert_eq!(small.len(), 1, "the ten full buckets are gone");
    }
}
