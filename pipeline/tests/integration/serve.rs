//! `openmonetize serve` over HTTP: health, SQL as a tenant (its rows only) and as an
//! admin, and the 4xx answers to a missing or unknown key, bad SQL and DDL. Uses the
//! real binary and plain HTTP/1.1 over a TCP socket.

use super::common::{golden_dir, openmonetize, sha256_hex};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// Stops the server with SIGTERM (it commits and answers what was posted) and
    /// returns its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `openmonetize serve --data DATA --config CONFIG EXTRA...` on a free port.
///
/// The job runs at the server's priority unless EXTRA says otherwise: the suite's tests
/// run side by side in one scheduling group, and a `SCHED_IDLE` job (serve's default)
/// would wait for every busy test around it.
pub fn start(data: &str, config: &std::path::Path, extra: &[&str]) -> Server {
    start_with_env(data, config, extra, &[])
}

/// [`start`] with these environment variables (e.g. an S3 server's endpoint and keys).
pub fn start_with_env(
    data: &str,
    config: &std::path::Path,
    extra: &[&str],
    env: &[(String, String)],
) -> Server {
    let priority: &[&str] = if extra.contains(&"--job-priority") {
        &[]
    } else {
        &["--job-priority", "normal"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args([
            "serve",
            "--data",
            data,
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--config",
        ])
        .arg(config)
        .args(extra)
        .args(priority)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    // Ready once /healthz answers 200 (a job restores its last commit first).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while request(&addr, "GET", "/healthz", None, "").0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "serve never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Server { child, addr }
}

/// (status, JSON body) of one request.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    try_request(addr, method, path, key, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// (status, JSON body) of one request, or why there is no answer (e.g. the server
/// died).
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect(addr)?;
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status: u16 = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {text:?}")))?;
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    ))
}

#[test]
fn sql_over_http_as_a_tenant_and_as_an_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = golden_dir("small");
    openmonetize(&[
        "run",
        "--config",
        dir.join("config.toml").to_str().unwrap(),
        "--events",
        &format!("file:{}", dir.join("events.jsonl").display()),
        "--data",
        data.to_str().unwrap(),
        "--quiet",
    ]);
    let config = tmp.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[api_keys]]\ntenant = \"acme\"\nsha256 = \"{}\"\n[[api_keys]]\nadmin = true\nsha256 = \"{}\"\n",
            sha256_hex("acme-secret"),
            sha256_hex("admin-secret")
        ),
    )
    .unwrap();
    let server = start(data.to_str().unwrap(), &config, &["--read-only"]);
    let addr = server.addr.as_str();

    let (status, body) = request(addr, "GET", "/healthz", None, "");
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));

    let sql = r#"{"sql": "SELECT tenant_id, count(*) AS n FROM events GROUP BY tenant_id ORDER BY tenant_id"}"#;
    let (status, body) = request(addr, "POST", "/v1/query", Some("acme-secret"), sql);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["columns"], serde_json::json!(["tenant_id", "n"]));
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["tenant_id"], "acme");

    // Decimals travel as exact strings, with their 9 digits.
    let (status, body) = request(
        addr,
        "POST",
        "/v1/query",
        Some("acme-secret"),
        r#"{"sql": "SELECT CAST(value AS VARCHAR) AS text, value FROM usage_windows ORDER BY value DESC LIMIT 20"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    for r in rows {
        let value = r["value"]
            .as_str()
            .unwrap_or_else(|| panic!("not a string: {r}"));
        assert_eq!(value, r["text"].as_str().unwrap());
        assert_eq!(value.split_once('.').unwrap().1.len(), 9, "{value}");
    }

    // The same as an Arrow IPC stream, read back by pyarrow with exact decimals.
    let arrow_sql = r#"{"sql": "SELECT customer_id, value FROM usage_windows WHERE window_size = 'day' ORDER BY customer_id, value"}"#;
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/query HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer acme-secret\r\nAccept: application/vnd.apache.arrow.stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{arrow_sql}",
        arrow_sql.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/vnd.apache.arrow.stream"),
        "{head}"
    );
    let stream = tmp.path().join("answer.arrows");
    std::fs::write(&stream, &answer[split + 4..]).unwrap();
    let python = std::env::var("OM_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys, pyarrow.ipc as ipc\n\
             t = ipc.open_stream(open(sys.argv[1], 'rb')).read_all()\n\
             print(t.num_rows, t.schema.field('value').type, sum(t.column('value').to_pylist()))",
        ])
        .arg(&stream)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = request(
        addr,
        "POST",
        "/v1/query",
        Some("acme-secret"),
        r#"{"sql": "SELECT count(*) AS n, CAST(sum(value) AS VARCHAR) AS s FROM usage_windows WHERE window_size = 'day'"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let want = format!(
        "{} decimal128(38, 9) {}",
        body["rows"][0]["n"],
        body["rows"][0]["s"].as_str().unwrap()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);

    let (status, body) = request(addr, "POST", "/v1/query", Some("admin-secret"), sql);
    assert_eq!(status, 200, "{body}");
    let tenants: Vec<&str> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme", "default"]);

    for (key, body, want, code) in [
        (None, sql, 401, "unauthorized"),
        (Some("wrong"), sql, 401, "unauthorized"),
        (
            Some("acme-secret"),
            r#"{"sql": "SELEC nonsense"}"#,
            400,
            "bad_query",
        ),
        (
            Some("acme-secret"),
            r#"{"sql": "DROP TABLE events"}"#,
            400,
            "bad_query",
        ),
        (
            Some("acme-secret"),
            r#"{"query": "SELECT 1"}"#,
            400,
            "bad_body",
        ),
    ] {
        let (status, answer) = request(addr, "POST", "/v1/query", key, body);
        assert_eq!(status, want, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, answer) = request(addr, "GET", "/v1/nothing", None, "");
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &serde_json::json!("not_found"))
    );
}
