//! Per-route HTTP request counts and latency histograms
//! (`rollcall_http_request_duration_seconds`, `rollcall_http_requests_total`),
//! fed by `http::observe` and rendered with the other families.
//!
//! Cardinality is bounded by construction: `route` is the router's path
//! template (`/api/sessions/{room}/attendance`) or `unmatched`, never a raw
//! path; `method` is one of eight names or `other` (clients choose methods
//! freely); `status` is a class, `1xx`..`5xx`. A route's series are
//! registered on its first request; after that a request costs a DashMap
//! shard read and a few relaxed atomic adds.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds, in seconds: an API that answers in a millisecond or two,
/// with room to see a slow store (Redis timeout 2 s) or a LiveKit call
/// (`reconcile`, up to `ROLLCALL_LIVEKIT_TIMEOUT`, 10 s).
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `route` of requests no route matched (404s, scanners).
pub const UNMATCHED: &str = "unmatched";

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "other",
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One (route, method): bucket counts (not cumulative; the last is over
/// every bound, `+Inf` only), the sum in nanoseconds, and status classes.
#[derive(Debug, Default)]
struct Series {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    statuses: [AtomicU64; STATUS_CLASSES.len()],
}

/// Every method of one route, allocated together on its first request.
type RouteSeries = [Series; METHODS.len()];

#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: DashMap<Box<str>, Arc<RouteSeries>>,
}

impl HttpMetrics {
    /// Records one request: `route` a template or [`UNMATCHED`], `status`
    /// its response's status code, `took` until the response was produced.
    pub fn observe(&self, route: &str, method: &http::Method, status: u16, took: Duration) {
        let series = match self.routes.get(route) {
            Some(found) => Arc::clone(&found),
            None => Arc::clone(self.routes.entry(route.into()).or_default().value()),
        };
        let series = &series[method_index(method)];
        let bucket = BUCKETS
            .iter()
            .position(|bound| took.as_secs_f64() <= *bound)
            .unwrap_or(BUCKETS.len());
        series.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        series.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            series.statuses[usize::from(class)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Both families; a (route, method) appears once it has a request, with
    /// all of its buckets and status classes (zeros included, so `rate()`
    /// sees a series before its first increment).
    pub fn render(&self, out: &mut String) {
        let mut routes: Vec<(Box<str>, Arc<RouteSeries>)> = self
            .routes
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        let name = "rollcall_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to produce a response, by route template and method (a WebSocket upgrade counts until its 101)."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (route, methods) in &routes {
            for (method, series) in METHODS.iter().zip(methods.iter()) {
                let counts = series.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
                let count: u64 = counts.iter().sum();
                if count == 0 {
                    continue;
                }
                let labels = format!("route=\"{route}\",method=\"{method}\"");
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(counts) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                let sum = series.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
            }
        }
        let name = "rollcall_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP responses, by route template, method and status class."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (route, methods) in &routes {
            for (method, series) in METHODS.iter().zip(methods.iter()) {
                let statuses = series
                    .statuses
                    .each_ref()
                    .map(|s| s.load(Ordering::Relaxed));
                if statuses.iter().all(|n| *n == 0) {
                    continue;
                }
                for (class, n) in STATUS_CLASSES.iter().zip(statuses) {
                    let _ = writeln!(
                        out,
                        "{name}{{route=\"{route}\",method=\"{method}\",status=\"{class}\"}} {n}"
                    );
                }
            }
        }
    }
}

fn method_index(method: &http::Method) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(METHODS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &HttpMetrics) -> Vec<String> {
        let mut out = String::new();
        m.render(&mut out);
        out.lines().map(str::to_owned).collect()
    }

    #[test]
    fn buckets_are_cumulative_and_inf_is_the_count() {
        let m = HttpMetrics::default();
        let get = http::Method::GET;
        m.observe("/healthz", &get, 200, Duration::from_micros(500));
        m.observe("/healthz", &get, 200, Duration::from_millis(3));
        m.observe("/healthz", &get, 503, Duration::from_secs(20));
        let text = lines(&m);
        let bucket = |le: &str| {
            let prefix = format!(
                "rollcall_http_request_duration_seconds_bucket{{route=\"/healthz\",method=\"GET\",le=\"{le}\"}} "
            );
            text.iter()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix}"))
                .to_owned()
        };
        assert_eq!(bucket("0.001"), "1");
        assert_eq!(bucket("0.0025"), "1");
        assert_eq!(bucket("0.005"), "2");
        assert_eq!(bucket("10"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert!(text.contains(
            &"rollcall_http_request_duration_seconds_count{route=\"/healthz\",method=\"GET\"} 3"
                .to_string()
        ));
        assert!(
            text.contains(
                &"rollcall_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"5xx\"} 1"
                    .to_string()
            )
        );
        assert!(
            text.contains(
                &"rollcall_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"2xx\"} 2"
                    .to_string()
            )
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = HttpMetrics::default();
        for name in ["BREW", "PROPFIND", "X"] {
            let method = http::Method::from_bytes(name.as_bytes()).unwrap();
            m.observe(UNMATCHED, &method, 405, Duration::ZERO);
        }
        let text = lines(&m).join("\n");
        assert!(text.contains(
            "rollcall_http_request_duration_seconds_count{route=\"unmatched\",method=\"other\"} 3"
        ));
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn families_are_declared_before_any_request() {
        let text = lines(&HttpMetrics::default());
        assert_eq!(text.len(), 4, "HELP and TYPE of both: {text:?}");
    }
}
