//! How long a client waits before it sends a request again: the retransmission timeout of
//! RFC 6298 (TCP's), from the round trips of requests answered at their first sending.
//!
//! A lost datagram (the request or its reply) is repaired after about one RTO instead of a
//! fixed timeout: SRTT + 4·RTTVAR, between [`MIN_RTO`] and the client's configured
//! timeout, which is also the wait before any round trip has been measured. Samples come
//! only from requests answered at their first sending (Karn's rule: a reply to a
//! retransmitted request could answer either copy). Resending is always safe: the cluster
//! applies a request once and answers copies from the client's session.

use std::time::Duration;

/// The shortest retransmission timeout.
pub const MIN_RTO: Duration = Duration::from_millis(10);

/// Smoothed round trip and its variation.
#[derive(Clone, Copy, Debug, Default)]
pub struct RttEstimator {
    /// SRTT and RTTVAR, once a round trip was measured.
    state: Option<(Duration, Duration)>,
}

impl RttEstimator {
    /// Takes one round trip of a request answered at its first sending.
    pub fn sample(&mut self, rtt: Duration) {
        self.state = Some(match self.state {
            None => (rtt, rtt / 2),
            Some((srtt, rttvar)) => {
                // RTTVAR := 3/4 RTTVAR + 1/4 |SRTT - R'|; SRTT := 7/8 SRTT + 1/8 R'.
                let deviation = srtt.abs_diff(rtt);
                (srtt * 7 / 8 + rtt / 8, rttvar * 3 / 4 + deviation / 4)
            }
        });
    }

    /// The wait before the first resend: SRTT + 4·RTTVAR within [`MIN_RTO`, `max`]; `max`
    /// until a round trip is known.
    pub fn rto(&self, max: Duration) -> Duration {
        match self.state {
            None => max,
            Some((srtt, rttvar)) => (srtt + rttvar * 4).clamp(MIN_RTO.min(max), max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_timeout_follows_the_round_trips_within_its_bounds() {
        let mut rtt = RttEstimator::default();
        assert_eq!(rtt.rto(500 * MS), 500 * MS, "nothing measured: the configured timeout");
        rtt.sample(20 * MS);
        assert_eq!(rtt.rto(500 * MS), 60 * MS, "first sample: R + 4·R/2");
        for _ in 0..50 {
            rtt.sample(20 * MS);
        }
        assert!(rtt.rto(500 * MS) < 25 * MS, "steady round trips shrink the variation");
        for _ in 0..50 {
            rtt.sample(MS / 10);
        }
        assert_eq!(rtt.rto(500 * MS), MIN_RTO, "never below the minimum");
        rtt.sample(2000 * MS);
        assert_eq!(rtt.rto(500 * MS), 500 * MS, "never above the configured timeout");
        assert_eq!(rtt.rto(5 * MS), 5 * MS, "a configured timeout below the minimum wins");
    }
}
