//! Latency figures with flat memory: a fixed log-scale histogram, so weeks of uptime cost nothing.

use serde::Serialize;

/// Buckets from 0.01 ms to about 100 s, 5% apart: a quantile is off by at most 5%.
const BUCKETS: usize = 340;
const BASE_MS: f64 = 0.01;
const GROWTH: f64 = 1.05;

/// A histogram of durations in milliseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max_ms: f64,
    sum_ms: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: Box::new([0; BUCKETS]), total: 0, max_ms: 0.0, sum_ms: 0.0 }
    }
}

/// Quantiles of a [`LatencyHistogram`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

impl LatencyHistogram {
    pub fn record_ms(&mut self, ms: f64) {
        let ms = ms.max(0.0);
        let i = if ms <= BASE_MS { 0 } else { ((ms / BASE_MS).ln() / GROWTH.ln()).ceil() as usize };
        self.counts[i.min(BUCKETS - 1)] += 1;
        self.total += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }

    pub fn record(&mut self, d: std::time::Duration) {
        self.record_ms(d.as_secs_f64() * 1e3);
    }

    /// The upper edge of the bucket holding quantile `q` (0..1), capped at the largest value seen.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (BASE_MS * GROWTH.powi(i as i32)).min(self.max_ms);
            }
        }
        self.max_ms
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum_ms += other.sum_ms;
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.total,
            mean_ms: if self.total == 0 { 0.0 } else { self.sum_ms / self.total as f64 },
            p50_ms: self.quantile_ms(0.5),
            p95_ms: self.quantile_ms(0.95),
            max_ms: self.max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_five_percent() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000 {
            h.record_ms(i as f64);
        }
        let s = h.summary();
        assert!((s.p50_ms - 500.0).abs() / 500.0 <= 0.05, "{s:?}");
        assert!((s.p95_ms - 950.0).abs() / 950.0 <= 0.05, "{s:?}");
        assert_eq!(s.max_ms, 1000.0);
        assert_eq!(LatencyHistogram::default().summary().p95_ms, 0.0);
    }
}
