//! The operator's side (issue 11): startup errors that name the variable,
//! log formats, `/metrics` (per-route latency, process, build) and the
//! Grafana dashboard checked against a live server's metric families.

use std::collections::BTreeSet;

use super::helpers::spawn_app;
use super::process::{ServerProcess, run_to_exit};

/// Each representative bad variable: the process exits non-zero and stderr
/// names the variable, its flag and the value.
#[tokio::test]
async fn bad_settings_name_the_variable_the_flag_and_the_value() {
    let cases = [
        (
            "ROLLCALL_HEARTBEAT_TIMEOUT",
            "abc",
            "--heartbeat-timeout",
            "expected a duration like 10s or 5m",
        ),
        (
            "ROLLCALL_MAX_CONNECTIONS",
            "-1",
            "--max-connections",
            "expected a whole number",
        ),
        (
            "ROLLCALL_RATE_WEBHOOKS",
            "x/y",
            "--rate-webhooks",
            "expected <count>/<duration>",
        ),
        (
            "ROLLCALL_LOG_FORMAT",
            "xml",
            "--log-format",
            "expected text or json",
        ),
        (
            "ROLLCALL_SWEEP_INTERVAL",
            "0s",
            "--sweep-interval",
            "must be greater than zero",
        ),
        (
            "ROLLCALL_REPORT_WEBHOOK_URL",
            "ftp://x",
            "--report-webhook-url",
            "http(s) URL",
        ),
    ];
    for (var, value, flag, why) in cases {
        let out = run_to_exit(&[(var, value)]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} must refuse to start");
        let expected = format!("invalid value '{value}' for {var} ({flag}): ");
        assert!(stderr.contains(&expected), "{var}: {stderr}");
        assert!(stderr.contains(why), "{var}: {stderr}");
    }
}

/// A process whose startup fails after it has logged (a broken
/// `SSL_CERT_FILE` with a report URL): its log lines, in `format`.
async fn startup_log(format: &str) -> String {
    let out = run_to_exit(&[
        ("ROLLCALL_LOG_FORMAT", format),
        ("RUST_LOG", "info"),
        ("ROLLCALL_REPORT_WEBHOOK_URL", "https://127.0.0.1:9/r"),
        ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
    ])
    .await;
    assert!(!out.status.success());
    String::from_utf8(out.stderr).expect("utf-8 log")
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let log = startup_log("json").await;
    let mut objects = 0;
    for line in log.lines() {
        // The fatal error itself is printed plainly, whatever the format
        // (and whatever RUST_LOG says), as the process exits.
        if line.starts_with("Error:") {
            break;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
        assert!(v["fields"]["message"].is_string(), "{line}");
        objects += 1;
    }
    assert!(objects >= 2, "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI codes in JSON");
}

#[tokio::test]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let log = startup_log("text").await;
    assert!(log.contains(" WARN rollcall::startup: "), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "a pipe gets no ANSI escapes: {log:?}"
    );
}

/// The samples of one family as (labels, value).
fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            (labels.is_empty() || labels.starts_with('{')).then_some(())?;
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn requests_are_timed_under_their_route_template() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.http.get(app.url("/healthz")).send().await.unwrap();
    }
    // A raw path with a room in it, unauthenticated: 401, under its template.
    let r = app
        .http
        .get(app.url("/api/sessions/abc/attendance"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.http
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hist = "rollcall_http_request_duration_seconds";
    let count = |labels: &str| {
        samples(&text, &format!("{hist}_count"))
            .into_iter()
            .find(|(l, _)| *l == labels)
            .map(|(_, v)| v)
    };
    assert_eq!(
        count("{route=\"/healthz\",method=\"GET\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        count("{route=\"/api/sessions/{room}/attendance\",method=\"GET\"}"),
        Some(1.0)
    );
    assert_eq!(count("{route=\"unmatched\",method=\"GET\"}"), Some(1.0));
    assert!(!text.contains("/api/sessions/abc"), "never a raw path");
    assert!(text.contains(
        "rollcall_http_requests_total{route=\"/api/sessions/{room}/attendance\",method=\"GET\",status=\"4xx\"} 1"
    ));
    // Every series: buckets never decrease and +Inf is the count.
    let buckets = samples(&text, &format!("{hist}_bucket"));
    assert!(!buckets.is_empty());
    let mut series: std::collections::BTreeMap<String, Vec<(String, f64)>> = Default::default();
    for (labels, value) in buckets {
        let (series_labels, le) = labels.rsplit_once(",le=").unwrap();
        series
            .entry(format!("{series_labels}}}"))
            .or_default()
            .push((le.trim_end_matches('}').trim_matches('"').to_owned(), value));
    }
    for (labels, rows) in &series {
        assert!(
            rows.windows(2).all(|w| w[0].1 <= w[1].1),
            "{labels}: {rows:?}"
        );
        let (le, inf) = rows.last().unwrap();
        assert_eq!(le, "+Inf");
        assert_eq!(Some(*inf), count(labels), "{labels}");
        assert_eq!(rows.len(), 14, "13 bounds and +Inf");
    }
    assert!(text.contains(&format!(
        "rollcall_build_info{{version=\"{}\",commit=",
        env!("CARGO_PKG_VERSION")
    )));
}

#[tokio::test]
async fn process_metrics_are_plausible() {
    let server = ServerProcess::spawn(&[]).await;
    let text = server.metrics_text().await;
    let value = |name: &str| samples(&text, name).first().map(|(_, v)| *v);
    let rss = value("process_resident_memory_bytes").expect("rss");
    assert!(rss > 0.0);
    // Within a page of what /proc/<pid>/status says (both read the same
    // counter, a moment apart).
    let status_rss = server.rss_kib() as f64 * 1024.0;
    assert!(
        (rss - status_rss).abs() < status_rss * 0.5,
        "{rss} vs {status_rss}"
    );
    assert!(value("process_open_fds").expect("fds") > 3.0);
    assert!(value("process_max_fds").expect("max fds") >= value("process_open_fds").unwrap());
    assert!(value("process_virtual_memory_bytes").expect("vsz") >= rss);
    assert!(value("process_cpu_seconds_total").expect("cpu") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("process_start_time_seconds").expect("start");
    assert!(
        (now - 120.0..=now + 2.0).contains(&start),
        "{start} vs {now}"
    );
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
];

/// The metric names of a PromQL expression: identifiers that are not
/// followed by `(` (functions), not PromQL words, and not inside label
/// matchers `{…}`, ranges `[…]`, strings, or `by (…)`-style label lists.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |i: &mut usize, close: char| {
        while *i < chars.len() && chars[*i] != close {
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => skip_to(&mut i, '}'),
            '[' => skip_to(&mut i, ']'),
            '"' => {
                i += 1;
                skip_to(&mut i, '"');
            }
            '$' => {
                // A Grafana variable: $__rate_interval, $instance.
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                let next = chars.get(j).copied();
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&word.as_str())
                    && next == Some('(')
                {
                    i = j;
                    skip_to(&mut i, ')');
                } else if next != Some('(') && !PROMQL_WORDS.contains(&word.as_str()) {
                    names.push(word);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le, route) (rate(rollcall_http_request_duration_seconds_bucket{instance=~\"$instance\"}[$__rate_interval])))"
        ),
        ["rollcall_http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("sum(rate(a_total[5m])) / sum without (x) (b) > 0.5 or on(y) c"),
        ["a_total", "b", "c"]
    );
}

fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_of_the_dashboard_exists() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/grafana/rollcall.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();

    // Reconciliation configured (its families render), on demand only.
    let server = ServerProcess::spawn(&[
        ("LIVEKIT_URL", "http://127.0.0.1:9"),
        ("ROLLCALL_RECONCILE_INTERVAL", "0"),
    ])
    .await;
    let text = server.metrics_text().await;
    // Families as declared by `# TYPE`: histograms are declared before
    // their first observation, so `_bucket` needs no request here.
    let families: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for name in &used {
        // Rendered only once this node has finished a pass (the dashboard
        // shows the minimum across nodes; empty until then).
        if name == "rollcall_reconcile_last_success_age_seconds" {
            continue;
        }
        let known = families.contains_key(name.as_str())
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|stem| families.get(stem))
                    .is_some_and(|kind| *kind == "histogram")
            });
        assert!(
            known,
            "the dashboard uses {name}, which /metrics does not have"
        );
    }
    assert!(used.contains("rollcall_http_request_duration_seconds_bucket"));
    assert!(used.contains("process_resident_memory_bytes"));
}
