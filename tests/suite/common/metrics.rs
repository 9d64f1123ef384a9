//! Scraping `GET /metrics` and reading samples out of the Prometheus text
//! format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The body of `GET /metrics`; panics unless the answer is 200 in the text
/// format.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to metrics at {addr}: {e}"));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: codeops\r\nAccept: text/plain\r\n\r\n")
        .await
        .expect("send the scrape");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the scrape");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// Every sample of `text`: (name, labels) → value.
pub fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
        .collect()
}

/// The value of `name` with exactly `labels` (in any order), if present.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples(text)
        .into_iter()
        .find(|(n, l, _)| n == name && *l == wanted)
        .map(|(_, _, value)| value)
}

/// Scrapes until `name{labels}` has `value`, for at most 10 s; the last
/// scrape when it never does.
pub async fn wait_for_sample(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr).await;
        if sample(&text, name, labels) == Some(value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series.to_owned(), BTreeMap::new(), value));
    };
    let labels = labels.strip_suffix('}')?;
    let mut parsed = BTreeMap::new();
    let mut chars = labels.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut label_value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => label_value.push('\n'),
                    other => label_value.push(other),
                },
                '"' => break,
                c => label_value.push(c),
            }
        }
        parsed.insert(key, label_value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name.to_owned(), parsed, value))
}

#[test]
fn samples_parse_with_escaped_label_values() {
    let text = "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"\\n\\\\\"} 3\ny 2.5\n";
    assert_eq!(
        sample(text, "x_total", &[("b", "q\"\n\\"), ("a", "1")]),
        Some(3.0)
    );
    assert_eq!(sample(text, "y", &[]), Some(2.5));
    assert_eq!(sample(text, "x_total", &[("a", "1")]), None);
}
