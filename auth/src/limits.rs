use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bulwark_config::{RateLimit, RateLimitsConfig};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::metrics::RateLimited;
use crate::scope::Scope;

type KeyedLimiter<K> =
    RateLimiter<K, DashMapStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// The bucket a request is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateGroup {
    /// Per key, for routes needing this scope.
    Scope(Scope),
    /// Per client IP, every request.
    PerIp,
    /// Per client IP, requests whose credential was refused.
    FailedAuth,
}

impl RateGroup {
    /// The metric label and the name in `auth.rate_limits`.
    pub fn as_str(self) -> &'static str {
        match self {
            RateGroup::Scope(scope) => scope.as_str(),
            RateGroup::PerIp => "per_ip",
            RateGroup::FailedAuth => "failed_auth",
        }
    }
}

/// A rate-limit decision, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed {
        /// The bucket's size.
        limit: u32,
        remaining: u32,
        /// Seconds until the bucket is full again.
        reset_secs: u64,
    },
    Limited {
        limit: u32,
        /// How long until one more request is allowed.
        retry_after: Duration,
    },
}

/// Token buckets (GCRA, from `governor`): per key for each scope group, per client IP, and
/// per client IP for refused credentials. Memory is bounded by [`RateLimiters::retain_recent`].
#[derive(Debug)]
pub struct RateLimiters {
    scopes: [KeyedLimiter<Arc<str>>; 4],
    per_ip: KeyedLimiter<IpAddr>,
    failed_auth: KeyedLimiter<IpAddr>,
    clock: DefaultClock,
}

fn quota(limit: RateLimit) -> Quota {
    let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

fn keyed<K: Clone + Eq + std::hash::Hash>(limit: RateLimit) -> KeyedLimiter<K> {
    RateLimiter::dashmap(quota(limit)).with_middleware::<StateInformationMiddleware>()
}

impl RateLimiters {
    pub fn new(config: &RateLimitsConfig) -> RateLimiters {
        RateLimiters {
            scopes: [
                keyed(config.read),
                keyed(config.submit),
                keyed(config.operate),
                keyed(config.admin),
            ],
            per_ip: keyed(config.per_ip),
            failed_auth: keyed(config.failed_auth_per_ip),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `key_id` against the bucket of `scope`.
    pub fn check_key(&self, scope: Scope, key_id: &Arc<str>) -> RateDecision {
        self.decide(RateGroup::Scope(scope), &self.scopes[scope.index()], key_id)
    }

    /// Counts one request from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> RateDecision {
        self.decide(RateGroup::PerIp, &self.per_ip, &ip)
    }

    /// Counts one refused credential from `ip`.
    pub fn check_failed_auth(&self, ip: IpAddr) -> RateDecision {
        self.decide(RateGroup::FailedAuth, &self.failed_auth, &ip)
    }

    fn decide<K: Clone + Eq + std::hash::Hash>(
        &self,
        group: RateGroup,
        limiter: &KeyedLimiter<K>,
        key: &K,
    ) -> RateDecision {
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let quota = snapshot.quota();
                let limit = quota.burst_size().get();
                let remaining = snapshot.remaining_burst_capacity();
                let refill = quota.replenish_interval() * limit.saturating_sub(remaining);
                RateDecision::Allowed {
                    limit,
                    remaining,
                    reset_secs: refill.as_secs_f64().ceil() as u64,
                }
            }
            Err(not_until) => {
                RateLimited {
                    limit: group.as_str(),
                }
                .emit();
                RateDecision::Limited {
                    limit: not_until.quota().burst_size().get(),
                    retry_after: not_until.wait_time_from(self.clock.now()),
                }
            }
        }
    }

    /// Forgets buckets that are full again, so idle keys and addresses cost no memory.
    pub fn retain_recent(&self) {
        for limiter in &self.scopes {
            limiter.retain_recent();
        }
        self.per_ip.retain_recent();
        self.failed_auth.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a key over its burst is limited with a retry time, another key and another
    /// scope are not, and allowed decisions count down what remains.
    #[test]
    fn buckets_are_per_key_and_scope() {
        let config = RateLimitsConfig {
            submit: RateLimit::new(1, 3),
            ..RateLimitsConfig::default()
        };
        let limiters = RateLimiters::new(&config);
        let remaining: Vec<u32> = (0..3)
            .map(
                |_| match limiters.check_key(Scope::Submit, &Arc::from("k1")) {
                    RateDecision::Allowed {
                        remaining, limit, ..
                    } => {
                        assert_eq!(limit, 3);
                        remaining
                    }
                    RateDecision::Limited { .. } => panic!("limited within the burst"),
                },
            )
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let RateDecision::Limited { retry_after, limit } =
            limiters.check_key(Scope::Submit, &Arc::from("k1"))
        else {
            panic!("the fourth request passed a burst of three");
        };
        assert_eq!(limit, 3);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        assert!(matches!(
            limiters.check_key(Scope::Submit, &Arc::from("k2")),
            RateDecision::Allowed { .. }
        ));
        assert!(matches!(
            limiters.check_key(Scope::Read, &Arc::from("k1")),
            RateDecision::Allowed { .. }
        ));
    }
}
