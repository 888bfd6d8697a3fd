//! Real services the end-to-end tests start for themselves on 127.0.0.1: a Kafka broker
//! (tansu) and an S3-compatible server (moto). `scripts/test` installs them; a test that
//! cannot start one fails and says why, it is never skipped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/test` installs the tools: `$OM_CACHE/tools/bin`.
fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("OM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/openmonetize")
        });
    let path = cache.join("tools/bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run scripts/test, which installs it (see README)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something listens on 127.0.0.1:`port`; panics with `log()` otherwise.
fn wait_for_port(what: &str, port: u16, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 30 s; its log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Kafka broker (tansu with its SQLite storage engine in a temporary directory),
/// stopped on drop. (Its object-store engine, `memory://`, skips the rest of a batch when
/// a fetch starts inside it, which a resuming consumer does.)
pub struct Broker {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let bin = tool("tansu");
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                // A path relative to the working directory.
                "sqlite://tansu.db",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let broker = Broker {
            child,
            port,
            log,
            _dir: dir,
        };
        wait_for_port("the Kafka broker (tansu)", port, || broker.log());
        broker
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates `topic` with `partitions` partitions; returns its `kafka://` address.
    pub fn topic(&self, topic: &str, partitions: u32) -> String {
        let out = Command::new(tool("tansu"))
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--partitions",
                &partitions.to_string(),
                topic,
            ])
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "creating topic {topic}: {}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        format!("kafka://127.0.0.1:{}/{topic}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3-compatible server (moto, from the test venv), stopped on drop.
pub struct S3Server {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> S3Server {
        let python = PathBuf::from(
            std::env::var_os("OM_PYTHON")
                .expect("OM_PYTHON names the test venv's python (scripts/test sets it)"),
        );
        let bin = python.with_file_name("moto_server");
        assert!(
            bin.exists(),
            "moto_server is not installed at {}: run scripts/test, which installs it",
            bin.display()
        );
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let server = S3Server { child, port, log };
        wait_for_port("the S3 server (moto)", port, || {
            std::fs::read_to_string(server.log.path()).unwrap_or_default()
        });
        server
    }

    /// The AWS environment that points a client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates a bucket (a plain S3 `PUT /BUCKET`).
    pub fn bucket(&self, name: &str) {
        use std::io::{Read, Write};
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            conn,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {response}"
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
