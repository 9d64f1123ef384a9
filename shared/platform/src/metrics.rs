//! Prometheus metrics of one process, served as text on their own HTTP port
//! (`endpoint`).
//!
//! The request pipeline records every RPC (started, finished by code,
//! latency, in flight) per service and method; the bootstrap registers each
//! service's pool, read when scraped. Other code counts domain events with
//! [`Metrics::counter`]:
//!
//! ```
//! # let metrics = codeops_platform::metrics::Metrics::new();
//! let locked = metrics.counter(
//!     "codeops_login_lockouts_total",
//!     "Logins refused because the account is locked out.",
//!     &[("service", "identity")],
//! );
//! locked.inc();
//! ```
//!
//! A [`Metrics`] is a cheap handle on one registry: the suite makes one per
//! process (`serve all` shares it between its services), and each test's
//! suite has its own, so counts never mix between tests.
//!
//! Method labels come only from the methods a port serves (anything else is
//! counted as `unknown`), so a client cannot grow the registry by calling
//! made-up paths.

pub mod endpoint;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;

use crate::db::Db;

/// Connections of a database pool, for the pool gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// The label value of a method a port does not serve.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Upper bounds (seconds) of the RPC latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Families the registry itself writes; a domain counter may not reuse one.
const RPC_STARTED: &str = "codeops_grpc_server_started_total";
const RPC_HANDLED: &str = "codeops_grpc_server_handled_total";
const RPC_LATENCY: &str = "codeops_grpc_server_handling_seconds";
const RPC_IN_FLIGHT: &str = "codeops_grpc_server_in_flight";
const POOL_SIZE: &str = "codeops_db_pool_connections";
const POOL_IDLE: &str = "codeops_db_pool_idle_connections";
const POOL_MAX: &str = "codeops_db_pool_max_connections";
const BUILT_IN: [&str; 7] = [
    RPC_STARTED,
    RPC_HANDLED,
    RPC_LATENCY,
    RPC_IN_FLIGHT,
    POOL_SIZE,
    POOL_IDLE,
    POOL_MAX,
];

/// A handle on one metrics registry; clones share it.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    rpc: Mutex<Vec<Arc<RpcMetrics>>>,
    pools: Mutex<Vec<(&'static str, Db)>>,
    counters: Mutex<BTreeMap<&'static str, CounterFamily>>,
}

struct CounterFamily {
    help: &'static str,
    label_names: Vec<&'static str>,
    /// Label values in `label_names` order → the count.
    series: BTreeMap<Vec<String>, Arc<AtomicU64>>,
}

/// A monotonically increasing count; clones share it.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter `name` with these labels, registered on first use; the
    /// same name and label values always give the same counter, so callers
    /// may ask once and keep the handle, or ask every time.
    ///
    /// `name` must be a Prometheus metric name ending in `_total` and not
    /// one the registry writes itself; every use of a name must give the
    /// same label names (in any order). Breaking these is a programming
    /// error and panics.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        assert!(
            is_metric_name(name) && name.ends_with("_total"),
            "metric {name:?}: a counter name matches [a-zA-Z_:][a-zA-Z0-9_:]* and ends in _total"
        );
        assert!(
            !BUILT_IN.contains(&name),
            "metric {name:?} is written by the registry itself"
        );
        let mut sorted: Vec<(&'static str, &str)> = labels.to_vec();
        sorted.sort_by_key(|(label, _)| *label);
        for pair in sorted.windows(2) {
            assert!(
                pair[0].0 != pair[1].0,
                "metric {name:?}: label {:?} given twice",
                pair[0].0
            );
        }
        for (label, _) in &sorted {
            assert!(
                is_label_name(label),
                "metric {name:?}: {label:?} is not a label name"
            );
        }
        let label_names: Vec<&'static str> = sorted.iter().map(|(label, _)| *label).collect();
        let values: Vec<String> = sorted
            .iter()
            .map(|(_, value)| (*value).to_owned())
            .collect();

        let mut counters = lock(&self.registry.counters);
        let family = counters.entry(name).or_insert_with(|| CounterFamily {
            help,
            label_names: label_names.clone(),
            series: BTreeMap::new(),
        });
        assert!(
            family.label_names == label_names,
            "metric {name:?} was registered with labels {:?}, now {label_names:?}",
            family.label_names
        );
        Counter(family.series.entry(values).or_default().clone())
    }

    /// Reports `db`'s pool as `service`'s pool gauges, read at every scrape.
    pub fn register_pool(&self, service: &'static str, db: Db) {
        lock(&self.registry.pools).push((service, db));
    }

    /// The RPC metrics of one port: `methods` are the paths
    /// (`/package.Service/Method`) it serves.
    pub(crate) fn register_rpc(
        &self,
        service: &'static str,
        methods: impl IntoIterator<Item = String>,
    ) -> Arc<RpcMetrics> {
        let rpc = Arc::new(RpcMetrics::new(service, methods));
        lock(&self.registry.rpc).push(rpc.clone());
        rpc
    }

    /// Every metric in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rpc = lock(&self.registry.rpc).clone();
        render_rpc(&mut out, &rpc);
        let pools: Vec<(&'static str, PoolStats)> = lock(&self.registry.pools)
            .iter()
            .map(|(service, db)| (*service, db.pool_stats()))
            .collect();
        render_pools(&mut out, &pools);
        render_counters(&mut out, &lock(&self.registry.counters));
        out
    }
}

/// A poisoned lock only means another thread panicked while counting; the
/// counts themselves are atomics and still right.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// RPC metrics

/// The RPC metrics of one port.
pub(crate) struct RpcMetrics {
    service: &'static str,
    methods: HashMap<String, Arc<MethodMetrics>>,
    /// `methods` and `unknown`, sorted by name, for stable output.
    sorted: Vec<Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

impl RpcMetrics {
    fn new(service: &'static str, methods: impl IntoIterator<Item = String>) -> Self {
        let methods: HashMap<String, Arc<MethodMetrics>> = methods
            .into_iter()
            .map(|path| {
                let metrics = Arc::new(MethodMetrics::new(path.clone()));
                (path, metrics)
            })
            .collect();
        let unknown = Arc::new(MethodMetrics::new(UNKNOWN_METHOD.to_owned()));
        let mut sorted: Vec<_> = methods.values().cloned().collect();
        sorted.push(unknown.clone());
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            service,
            methods,
            sorted,
            unknown,
        }
    }

    /// The metrics `path` counts into.
    pub(crate) fn method(&self, path: &str) -> &Arc<MethodMetrics> {
        self.methods.get(path).unwrap_or(&self.unknown)
    }
}

/// The counts of one method.
pub(crate) struct MethodMetrics {
    name: String,
    started: AtomicU64,
    in_flight: AtomicI64,
    /// Finished calls by gRPC code (0..=16).
    handled: [AtomicU64; 17],
    /// Calls per latency bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_nanos: AtomicU64,
}

impl MethodMetrics {
    fn new(name: String) -> Self {
        Self {
            name,
            started: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            handled: Default::default(),
            buckets: Default::default(),
            latency_sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, code: Code, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.handled[code as usize].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The canonical name of a gRPC code, as in the gRPC documentation.
pub fn code_name(code: Code) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES[code as usize]
}

fn render_rpc(out: &mut String, ports: &[Arc<RpcMetrics>]) {
    // Only methods that were called: a port serves dozens, most idle.
    let called = || {
        ports.iter().flat_map(|port| {
            port.sorted
                .iter()
                .filter(|m| m.started.load(Ordering::Relaxed) > 0)
                .map(move |m| (port.service, m))
        })
    };

    header(out, RPC_STARTED, "counter", "RPCs started.");
    for (service, m) in called() {
        let value = m.started.load(Ordering::Relaxed);
        sample(
            out,
            RPC_STARTED,
            &[("service", service), ("method", m.name.as_str())],
            value,
        );
    }

    header(
        out,
        RPC_HANDLED,
        "counter",
        "RPCs finished, by gRPC status code (CANCELLED when the client went away first).",
    );
    for (service, m) in called() {
        for (code, count) in m.handled.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let code = code_name(Code::from_i32(code as i32));
                let labels = [
                    ("service", service),
                    ("method", m.name.as_str()),
                    ("code", code),
                ];
                sample(out, RPC_HANDLED, &labels, count);
            }
        }
    }

    header(
        out,
        RPC_LATENCY,
        "histogram",
        "Time from a request's arrival to its final status, in seconds.",
    );
    for (service, m) in called() {
        let mut cumulative = 0;
        for (i, count) in m.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |bound| bound.to_string());
            let labels = [
                ("service", service),
                ("method", m.name.as_str()),
                ("le", le.as_str()),
            ];
            sample(out, &format!("{RPC_LATENCY}_bucket"), &labels, cumulative);
        }
        let labels = [("service", service), ("method", m.name.as_str())];
        let sum = m.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        sample(out, &format!("{RPC_LATENCY}_sum"), &labels, sum);
        sample(out, &format!("{RPC_LATENCY}_count"), &labels, cumulative);
    }

    header(
        out,
        RPC_IN_FLIGHT,
        "gauge",
        "RPCs started and not yet finished.",
    );
    for (service, m) in called() {
        let value = m.in_flight.load(Ordering::Relaxed);
        sample(
            out,
            RPC_IN_FLIGHT,
            &[("service", service), ("method", m.name.as_str())],
            value,
        );
    }
}

fn render_pools(out: &mut String, pools: &[(&'static str, PoolStats)]) {
    type Gauge = fn(&PoolStats) -> u32;
    let gauges: [(&str, &str, Gauge); 3] = [
        (
            POOL_SIZE,
            "Open database connections, idle or in use.",
            |s| s.size,
        ),
        (
            POOL_IDLE,
            "Open database connections idle in the pool.",
            |s| s.idle,
        ),
        (
            POOL_MAX,
            "The most database connections the pool opens.",
            |s| s.max,
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        for (service, stats) in pools {
            sample(out, name, &[("service", service)], value(stats));
        }
    }
}

fn render_counters(out: &mut String, counters: &BTreeMap<&'static str, CounterFamily>) {
    for (name, family) in counters {
        header(out, name, "counter", family.help);
        for (values, count) in &family.series {
            let labels: Vec<(&str, &str)> = family
                .label_names
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            sample(out, name, &labels, count.load(Ordering::Relaxed));
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_starting(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn rpcs_are_counted_by_method_and_code_and_timed() {
        let metrics = Metrics::new();
        let rpc = metrics.register_rpc("identity", ["/a.v1.S/Get".to_owned()]);
        let get = rpc.method("/a.v1.S/Get");
        for _ in 0..3 {
            get.started();
            get.finished(Code::Ok, Duration::from_millis(2));
        }
        get.started();
        get.finished(Code::Unauthenticated, Duration::from_secs(60));
        get.started();

        let text = metrics.render();
        let labels = r#"service="identity",method="/a.v1.S/Get""#;
        assert!(
            text.contains(&format!("{RPC_STARTED}{{{labels}}} 5\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{RPC_HANDLED}{{{labels},code=\"OK\"}} 3\n")));
        assert!(text.contains(&format!(
            "{RPC_HANDLED}{{{labels},code=\"UNAUTHENTICATED\"}} 1\n"
        )));
        assert!(text.contains(&format!("{RPC_IN_FLIGHT}{{{labels}}} 1\n")));
        assert!(text.contains(&format!(
            "{RPC_LATENCY}_bucket{{{labels},le=\"0.001\"}} 0\n"
        )));
        assert!(text.contains(&format!(
            "{RPC_LATENCY}_bucket{{{labels},le=\"0.0025\"}} 3\n"
        )));
        assert!(text.contains(&format!("{RPC_LATENCY}_bucket{{{labels},le=\"30\"}} 3\n")));
        assert!(text.contains(&format!("{RPC_LATENCY}_bucket{{{labels},le=\"+Inf\"}} 4\n")));
        assert!(text.contains(&format!("{RPC_LATENCY}_count{{{labels}}} 4\n")));
        let sum = lines_starting(&text, &format!("{RPC_LATENCY}_sum"));
        let sum: f64 = sum[0]
            .rsplit(' ')
            .next()
            .expect("value")
            .parse()
            .expect("a number");
        assert!((sum - 60.006).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn unknown_paths_share_one_label_and_idle_methods_are_not_listed() {
        let metrics = Metrics::new();
        let rpc = metrics.register_rpc("planning", ["/a.v1.S/Idle".to_owned()]);
        for path in ["/made.up/One", "/made.up/Two"] {
            rpc.method(path).started();
        }
        let text = metrics.render();
        assert_eq!(
            lines_starting(&text, RPC_STARTED),
            [format!(
                r#"{RPC_STARTED}{{service="planning",method="unknown"}} 2"#
            )]
        );
        assert!(!text.contains("Idle"), "{text}");
    }

    #[test]
    fn a_counter_is_one_series_per_label_values_and_label_order_does_not_matter() {
        let metrics = Metrics::new();
        let a = metrics.counter("x_events_total", "Events.", &[("kind", "a"), ("at", "1")]);
        let again = metrics.counter("x_events_total", "Events.", &[("at", "1"), ("kind", "a")]);
        let b = metrics.counter(
            "x_events_total",
            "Events.",
            &[("kind", "b\"\n\\"), ("at", "1")],
        );
        a.inc();
        again.inc_by(2);
        b.inc();
        assert_eq!(a.get(), 3);
        let text = metrics.render();
        assert!(text.contains("# HELP x_events_total Events.\n# TYPE x_events_total counter\n"));
        assert!(
            text.contains("x_events_total{at=\"1\",kind=\"a\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_events_total{at=\"1\",kind=\"b\\\"\\n\\\\\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    #[should_panic(expected = "ends in _total")]
    fn a_counter_name_must_end_in_total() {
        Metrics::new().counter("x_events", "Events.", &[]);
    }

    #[test]
    #[should_panic(expected = "was registered with labels")]
    fn a_counter_keeps_its_label_names() {
        let metrics = Metrics::new();
        metrics.counter("x_events_total", "Events.", &[("kind", "a")]);
        metrics.counter("x_events_total", "Events.", &[("reason", "a")]);
    }

    #[test]
    #[should_panic(expected = "written by the registry")]
    fn a_counter_cannot_take_a_built_in_name() {
        Metrics::new().counter(RPC_STARTED, "Nope.", &[]);
    }

    #[test]
    fn code_names_follow_the_grpc_documentation() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
