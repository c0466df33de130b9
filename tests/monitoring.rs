//! The monitoring files in `deploy/` against the real tools and binaries: promtool accepts the alert
//! rules and their unit tests pass; the Grafana dashboard is well formed; and every metric, label
//! and label value that the dashboard or the rules query is one that a running `ringsfu` or
//! `sfu-gateway` really exports on `/metrics`.

mod common;
mod gateway_support;

use common::{Server, Ws, now, sign};
use gateway_support::{CHANNEL_KEY, FAST, Gateway, channel_with_key, gateway_key, node};
use ringsfu_common::auth::Key;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DASHBOARD: &str = "deploy/grafana/ringsfu.json";
const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yml";
/// Odoo 18 sends a per-channel key; sessions sign with it.
/// Series Prometheus adds to every scrape itself.
const SYNTHETIC: &[&str] = &["up"];
/// Labels Prometheus attaches to every scraped series (the target's).
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) {
    let output = match Command::new("promtool").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool is not installed: run `make test-deps` (it installs Debian's prometheus package)")
        }
        Err(e) => panic!("promtool could not run: {e}"),
    };
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_unit_tests_pass() {
    promtool(&["check", "rules", RULES]);
    promtool(&["test", "rules", RULE_TESTS]);
}

#[test]
fn every_dashboard_panel_has_a_datasource_and_a_query() {
    let dashboard = dashboard();
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource", "the first variable picks the data source");
    let mut ids = BTreeSet::new();
    let panels = panels(&dashboard);
    assert!(panels.len() > 20, "{} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64().expect("a numeric id")), "panel id of {title} is not unique");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}: datasource");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            assert!(target["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{title}: a target without expr");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let sfu = Server::start(&[("PROXY", "1"), ("NUM_WORKERS", "2")]);
    let sfu_address = format!("http://{}", sfu.http);
    // Room for one session, so that a second caller finds every SFU full (503, "unavailable").
    let secrets = format!("{}\n{FAST}", node(&sfu_address, "here", common::KEY_B64, "max_sessions = 1"));
    let gw = Gateway::start(&secrets, &[]);
    gw.wait_all_healthy().await;

    // A channel through the gateway, and a session on it.
    let channel = channel_with_key(&gw, "odoo:monitoring").await;
    let uuid = channel["uuid"].as_str().unwrap();
    let jwt = sign(
        json!({"sfu_channel_uuid": uuid, "session_id": 1, "exp": now() + 60}),
        &Key::from_base64(CHANNEL_KEY).unwrap(),
    );
    let mut session = Ws::connect(&sfu.ws_url()).await;
    session.authenticate(uuid, &jwt).await;
    let sfu_metrics = scrape_until(&sfu.url("/metrics"), "ringsfu counts the session", |m| {
        m.contains("ringsfu_shard_sessions{shard=\"0\"} 1") || m.contains("ringsfu_shard_sessions{shard=\"1\"} 1")
    })
    .await;
    assert!(sfu_metrics.contains("ringsfu_websocket_connections 1"), "{sfu_metrics}");

    // The SFU is now full: a new caller is refused.
    gw.wait_health("the gateway sees the session", |h| h["nodes"][0]["load"]["sessions"] == 1).await;
    let (status, _) = gw.channel("odoo:monitoring:second", "webRTC=false").await;
    assert_eq!(status, 503, "the only SFU is full");

    // A server-side WebSocket close, a forwarded disconnect, one good and one refused reload.
    let mut stranger = Ws::connect(&sfu.ws_url()).await;
    stranger.send_text("not credentials").await;
    assert_eq!(stranger.expect_close(Duration::from_secs(5)).await, Some(4106));
    let disconnect = sign(json!({"sessionIdsByChannel": {uuid: [1]}, "exp": now() + 20}), &gateway_key());
    let response = reqwest::Client::new().post(gw.url("/v1/disconnect")).body(disconnect).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(session.expect_close(Duration::from_secs(5)).await, Some(4108), "the session is disconnected");
    gw.signal(libc::SIGHUP);
    scrape_until(&gw.url("/metrics"), "a reload", |m| m.contains("sfu_gateway_reloads_total{result=\"ok\"} 1")).await;
    gw.rewrite_secrets("[[sfu]]\naddress = \"nope\"\n");
    gw.signal(libc::SIGHUP);
    let gateway_metrics = scrape_until(&gw.url("/metrics"), "a refused reload", |m| {
        m.contains("sfu_gateway_reloads_total{result=\"failed\"} 1")
    })
    .await;
    let sfu_metrics = scrape_until(&sfu.url("/metrics"), "ringsfu counts the 4106 close", |m| {
        m.contains("ringsfu_websocket_closes_total{code=\"4106\"} 1")
    })
    .await;

    let mut exported = exposition(&sfu_metrics);
    let gateway = exposition(&gateway_metrics);
    assert!(exported.keys().all(|name| !gateway.contains_key(name)), "ringsfu and the gateway share no metric");
    exported.extend(gateway);

    let (problems, names) = check_queries(&queries(), &exported);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboard covers both binaries.
    assert!(names.iter().filter(|n| n.starts_with("ringsfu_")).count() >= 20, "{names:?}");
    assert!(names.iter().filter(|n| n.starts_with("sfu_gateway_")).count() >= 10, "{names:?}");
}

type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// What in `queries` names a metric, label or label value absent from `exported`; and every metric
/// name seen.
fn check_queries(queries: &[(String, String)], exported: &Exported) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for (origin, expr) in queries {
        let refs = promql_refs(expr);
        if refs.selectors.is_empty() {
            problems.push(format!("{origin}: no metric in {expr}"));
        }
        let mut labels_in_scope: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for selector in &refs.selectors {
            names.insert(selector.metric.clone());
            if SYNTHETIC.contains(&selector.metric.as_str()) {
                continue;
            }
            let Some(series) = exported.get(&selector.metric) else {
                problems.push(format!("{origin}: {} is not exported", selector.metric));
                continue;
            };
            labels_in_scope.extend(series.keys().map(String::as_str));
            for matcher in &selector.matchers {
                if TARGET_LABELS.contains(&matcher.label.as_str()) {
                    continue;
                }
                let Some(values) = series.get(&matcher.label) else {
                    problems.push(format!("{origin}: {} has no label {}", selector.metric, matcher.label));
                    continue;
                };
                if matcher.op == "=" && !matcher.value.contains('$') && !values.contains(&matcher.value) {
                    problems.push(format!(
                        "{origin}: {} never has {}=\"{}\" (seen: {values:?})",
                        selector.metric, matcher.label, matcher.value
                    ));
                }
            }
        }
        for label in &refs.grouping {
            if !labels_in_scope.contains(label.as_str()) {
                problems.push(format!("{origin}: grouping by {label}, which none of its metrics has"));
            }
        }
    }
    (problems, names)
}

async fn scrape_until(url: &str, what: &str, predicate: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        if predicate(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{url} never showed {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel but rows, including those folded inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

/// Every PromQL expression of the dashboard (targets and variable queries) and of the rules, with
/// where it comes from.
fn queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut out = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        // Grafana's `label_values(selector, label)` is not PromQL: check it as `sum by (label) (selector)`.
        let query = variable["query"]["query"].as_str().unwrap();
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push((format!("variable {}", variable["name"]), format!("sum by ({label}) ({selector})")));
    }
    let rules = std::fs::read_to_string(repo(RULES)).unwrap();
    let exprs = rule_exprs(&rules);
    let rule_count = rules.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert_eq!(exprs.len(), rule_count, "one expr per rule in {RULES}: {exprs:#?}");
    out.extend(exprs.into_iter().map(|e| (RULES.to_string(), e)));
    out
}

/// The `expr:` values of a rules file written as `alerts.yml` says: on one line, or a `|` block.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else { continue };
        if !indent.trim().is_empty() && indent.trim() != "-" {
            continue;
        }
        let rest = rest.trim();
        if !rest.starts_with('|') {
            out.push(rest.to_string());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent.len() {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        out.push(block);
    }
    out
}

/// Series names of a text exposition, with each label's values.
fn exposition(text: &str) -> Exported {
    let mut out = Exported::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        let Some(mut rest) = line[name_end..].strip_prefix('{') else { continue };
        while let Some((label, after)) = rest.split_once("=\"") {
            let (value, after) = quoted(after);
            labels.entry(label.trim_start_matches(',').to_string()).or_default().insert(value);
            rest = after;
        }
    }
    out
}

/// The text up to the closing quote (escapes undone), and what follows it.
fn quoted(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            '"' => return (value, &s[i + 1..]),
            c => value.push(c),
        }
    }
    (value, "")
}

/// What one PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
struct Refs {
    selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` lists.
    grouping: Vec<String>,
}

#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug, PartialEq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: &[&str] = &["and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"];

/// The metric selectors and grouping labels of a PromQL expression: a tokenizer that skips strings,
/// comments, numbers, durations and subqueries in `[]`, Grafana variables, functions (an
/// identifier before `(`), aggregations and keywords. What is left is a metric name.
fn promql_refs(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_blank = |mut i: usize| {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    let word_end = |mut i: usize| {
        while chars.get(i).is_some_and(|&c| ident(c)) {
            i += 1;
        }
        i
    };
    let mut refs = Refs::default();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = string_end(&chars, i),
            '#' => i = chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |n| i + n),
            '[' => i = chars[i..].iter().position(|&c| c == ']').map_or(chars.len(), |n| i + n + 1),
            '$' if chars.get(i + 1) == Some(&'{') => {
                i = chars[i..].iter().position(|&c| c == '}').map_or(chars.len(), |n| i + n + 1)
            }
            '$' => i = word_end(i + 1),
            '{' => {
                // A selector without a name before its braces names its metric in `__name__`.
                let (matchers, end) = matchers(&chars, i);
                let metric = matchers.iter().find(|m| m.label == "__name__").map(|m| m.value.clone());
                refs.selectors.push(Selector { metric: metric.unwrap_or_default(), matchers });
                i = end;
            }
            c if c.is_ascii_digit() || c == '.' => {
                while chars.get(i).is_some_and(|&c| c.is_ascii_alphanumeric() || c == '.') {
                    i += 1;
                }
            }
            c if ident(c) => {
                let end = word_end(i);
                let word: String = chars[i..end].iter().collect();
                let next = skip_blank(end);
                let opens = |c: char| chars.get(next) == Some(&c);
                if LABEL_LISTS.contains(&word.as_str()) {
                    i = end;
                    if opens('(') {
                        let close = chars[next..].iter().position(|&c| c == ')').map_or(chars.len(), |n| next + n);
                        let list: String = chars[next + 1..close].iter().collect();
                        refs.grouping
                            .extend(list.split(',').map(str::trim).filter(|l| !l.is_empty()).map(String::from));
                        i = close + 1;
                    }
                } else if opens('(')
                    || AGGREGATIONS.contains(&word.as_str())
                    || KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                {
                    i = end;
                } else if opens('{') {
                    let (matchers, after) = matchers(&chars, next);
                    refs.selectors.push(Selector { metric: word, matchers });
                    i = after;
                } else {
                    refs.selectors.push(Selector { metric: word, matchers: Vec::new() });
                    i = end;
                }
            }
            _ => i += 1,
        }
    }
    refs
}

/// Index just past the string literal starting at `start`.
fn string_end(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The label matchers of the `{...}` at `open`, and the index just past its `}`.
fn matchers(chars: &[char], open: usize) -> (Vec<Matcher>, usize) {
    let mut out = Vec::new();
    let mut i = open + 1;
    while i < chars.len() && chars[i] != '}' {
        if !(chars[i].is_ascii_alphabetic() || chars[i] == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        let op_start = i;
        while i < chars.len() && !matches!(chars[i], '"' | '\'' | '`') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().filter(|c| !c.is_whitespace()).collect();
        let end = string_end(chars, i);
        let value: String = chars.get(i + 1..end - 1).unwrap_or_default().iter().collect();
        out.push(Matcher { label, op, value });
        i = end;
    }
    (out, i + 1)
}

#[test]
fn the_promql_reader_finds_metrics_and_labels_and_nothing_else() {
    let names = |expr: &str| promql_refs(expr).selectors.into_iter().map(|s| s.metric).collect::<Vec<_>>();
    let grouping = |expr: &str| promql_refs(expr).grouping;
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            r#"sum by (reason) (rate(drops_total{instance=~"$instance", reason!="x{y}"}[$__rate_interval]))"#,
            &["drops_total"],
            &["reason"],
        ),
        (
            "a / on (instance, job) group_left b > 0.01 and on(x) c offset 15m",
            &["a", "b", "c"],
            &["instance", "job", "x"],
        ),
        ("histogram_quantile(0.99, sum(rate(x_bucket[5m:1m])) by (le))", &["x_bucket"], &["le"]),
        ("-rate(x_total[1m]) * 1e-3 + Inf - NaN", &["x_total"], &[]),
        (r#"count_values("sum", build_info) # not_a_metric"#, &["build_info"], &[]),
        ("max without (node) (m) > bool 1 unless ignoring(shard) n", &["m", "n"], &["node", "shard"]),
        (r#"label_replace(m, "dst", "$1", "src", "(.*)") or vector(0)"#, &["m"], &[]),
        ("a:recorded:rate5m", &["a:recorded:rate5m"], &[]),
    ];
    for (expr, want_names, want_grouping) in cases {
        assert_eq!(names(expr), *want_names, "names of {expr}");
        assert_eq!(grouping(expr), *want_grouping, "grouping of {expr}");
    }
    let refs = promql_refs(r#"m{a="1", b =~ "x|y", c!~'z'}"#);
    let matchers: Vec<_> = refs.selectors[0].matchers.iter().map(|m| (&*m.label, &*m.op, &*m.value)).collect();
    assert_eq!(matchers, [("a", "=", "1"), ("b", "=~", "x|y"), ("c", "!~", "z")]);
}

#[test]
fn rule_expressions_are_read_on_one_line_or_as_blocks() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      \
                - alert: B\n        expr: |\n          sum(x)\n\n          > 1\n        labels:\n          severity: warning\n";
    assert_eq!(rule_exprs(yaml), ["up == 0", "sum(x)\n\n> 1\n"]);
}

#[test]
fn exposition_lines_give_names_labels_and_values() {
    let text = "# TYPE a counter\na_total{node=\"http://x:1\",q=\"say \\\"hi\\\"\"} 1\nb 2\n# EOF\n";
    let parsed = exposition(text);
    assert_eq!(parsed.keys().collect::<Vec<_>>(), ["a_total", "b"]);
    assert_eq!(parsed["a_total"]["node"], BTreeSet::from(["http://x:1".to_string()]));
    assert_eq!(parsed["a_total"]["q"], BTreeSet::from(["say \"hi\"".to_string()]));
}

#[test]
fn unknown_metrics_labels_values_and_groupings_are_reported() {
    let exported = exposition("a_total{reason=\"x\",shard=\"0\"} 1\n");
    let queries: Vec<(String, String)> = [
        ("fine", r#"sum by (reason, instance) (rate(a_total{reason="x", shard=~"$shard"}[5m])) or up == 0"#),
        ("name", "rate(b_total[5m])"),
        ("label", r#"a_total{code="1"}"#),
        ("value", r#"a_total{reason="y"}"#),
        ("grouping", "sum by (node) (a_total)"),
        ("empty", "vector(1)"),
    ]
    .iter()
    .map(|(origin, expr)| (origin.to_string(), expr.to_string()))
    .collect();
    let (problems, names) = check_queries(&queries, &exported);
    assert_eq!(
        problems,
        [
            "name: b_total is not exported",
            "label: a_total has no label code",
            r#"value: a_total never has reason="y" (seen: {"x"})"#,
            "grouping: grouping by node, which none of its metrics has",
            "empty: no metric in vector(1)",
        ]
    );
    assert_eq!(names, BTreeSet::from(["a_total".to_string(), "b_total".to_string(), "up".to_string()]));
}
