//! What the harness's programs share: their flags, and latency histograms
//! in microseconds read out in milliseconds.

use std::time::Duration;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;

/// The command line, read as `--name value` pairs.
pub struct Args(pub Vec<String>);

impl Args {
    pub fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.0
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(|s| s.as_str())
    }

    pub fn req(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| anyhow!("missing --{name}"))
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| anyhow!("bad --{name} {v}")),
        }
    }
}

/// A histogram of latencies in microseconds, 1 µs to 60 s.
pub fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?)
}

/// Milliseconds at quantile `q` of a histogram of microseconds (0 when empty).
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The largest value of a histogram of microseconds, in milliseconds.
pub fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    }
}

/// `d` in microseconds, within the histograms' bounds.
pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 60_000_000)
}
