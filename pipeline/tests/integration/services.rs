//! Real services the end-to-end tests start for themselves on 127.0.0.1: a Kafka broker
//! (tansu). `scripts/test` installs them; a test that cannot start one fails and says
//! why, it is never skipped.

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

/// A Kafka broker (tansu, in-memory storage), stopped on drop.
pub struct Broker {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let bin = tool("tansu");
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let broker = Broker { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not listen on 127.0.0.1:{port} within 20 s; its log:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
