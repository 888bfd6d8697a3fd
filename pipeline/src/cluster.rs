//! Cluster mode: one job in several `openmonetize run` processes, connected by timely's
//! own communication layer (`--processes N --process I --hosts FILE`, or `OM_PROCESSES`,
//! `OM_PROCESS`, `OM_HOSTS`).
//!
//! Every process runs `--workers W` timely workers, and the job has N x W of them,
//! numbered process by process: process `I` holds workers `I*W .. (I+1)*W`. The job
//! itself does not change: sources are split by the global worker index, exchanges
//! route by it, and global worker 0 (in process 0) reads the commands and writes every
//! commit record. See `docs/design/cluster.md` for how a failure stops every process.

use anyhow::{Context, bail};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a process reports when a connection to another process of the cluster broke.
pub const LOST: &str = "lost the connection to another process of the cluster (it failed, was killed, or the network broke), so every process stops; restart all of them: the job resumes from its last commit";

/// Set once a worker of this process failed by itself (not because a connection
/// broke): then its own error is what the process reports at the end.
pub static FAILED_HERE: AtomicBool = AtomicBool::new(false);

/// Whether a worker's panic message is timely's for a broken connection.
pub fn is_network_panic(message: &str) -> bool {
    [
        "timely communication error",
        "MergeQueue poisoned",
        "Send thread panic",
        "Recv thread panic",
    ]
    .iter()
    .any(|p| message.starts_with(p))
}

/// Where this process sits in a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Number of processes (N).
    pub processes: usize,
    /// This process's index (I, `0..N`).
    pub process: usize,
    /// `host:port` of each process, by index: where it listens for the others.
    pub addresses: Vec<String>,
    /// How long to wait for every other process to connect before giving up.
    pub connect_timeout: std::time::Duration,
}

/// The default of `--connect-timeout`: long enough for the pods of a StatefulSet to be
/// scheduled and pull their image one after the other.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl Cluster {
    /// A cluster from the `--processes`, `--process` and `--hosts` settings (flags or
    /// their environment variables); `None` when none is given (one process). All three
    /// go together.
    pub fn from_settings(
        processes: Option<usize>,
        process: Option<usize>,
        hosts: Option<&Path>,
    ) -> anyhow::Result<Option<Cluster>> {
        let (processes, process, hosts) = match (processes, process, hosts) {
            (None, None, None) => return Ok(None),
            (Some(n), Some(i), Some(h)) => (n, i, h),
            _ => bail!(
                "cluster mode needs --processes N (OM_PROCESSES), --process I (OM_PROCESS) and --hosts FILE (OM_HOSTS) together; got only {}",
                [
                    processes.map(|_| "--processes"),
                    process.map(|_| "--process"),
                    hosts.map(|_| "--hosts"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
            ),
        };
        if processes == 0 {
            bail!("--processes 0: a cluster has at least 1 process");
        }
        if process >= processes {
            bail!(
                "--process {process} is not a process of a cluster of --processes {processes}: use 0..{} (the first process is 0)",
                processes - 1
            );
        }
        let text = std::fs::read_to_string(hosts)
            .with_context(|| format!("reading the hosts file {}", hosts.display()))?;
        let addresses = parse_hosts(&text, processes)
            .with_context(|| format!("in the hosts file {}", hosts.display()))?;
        Ok(Some(Cluster {
            processes,
            process,
            addresses,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }))
    }

    /// Ends the process with an error naming the other processes' addresses unless
    /// `connected` is set within the connect timeout. Timely waits for the other
    /// processes forever (printing "retrying" every second); a job whose peer never
    /// comes up, from a wrong hosts file or a crashed pod, must fail instead.
    pub fn watch_connecting(&self, connected: std::sync::Arc<AtomicBool>) {
        let cluster = self.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + cluster.connect_timeout;
            while std::time::Instant::now() < deadline {
                if connected.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if connected.load(Ordering::SeqCst) {
                return;
            }
            let others: Vec<String> = cluster
                .addresses
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != cluster.process)
                .map(|(i, a)| format!("process {i} at {a}"))
                .collect();
            eprintln!(
                "error: process {} of {} could not connect to every other process of the cluster within {:?} ({}): start all {} processes with the same --hosts file, check that each listens on its address and that these are reachable, or raise --connect-timeout",
                cluster.process,
                cluster.processes,
                cluster.connect_timeout,
                others.join(", "),
                cluster.processes
            );
            std::process::exit(1);
        });
    }

    /// The timely configuration of this process with `workers` workers.
    pub fn timely_config(&self, workers: usize) -> timely::Config {
        timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        }
    }
}

/// While held, panics that only echo a broken connection between the processes are
/// not printed (timely's network threads, the workers that find their channels
/// poisoned, and the join of the network threads); the job's error says what happened.
/// The cause of the break, timely's "timely communication error", is printed in one line.
pub struct QuietNetworkPanics {
    previous: Option<std::sync::Arc<PanicHook>>,
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

impl QuietNetworkPanics {
    /// Installs the filter in front of the current panic hook.
    pub fn install() -> QuietNetworkPanics {
        let previous = std::sync::Arc::new(std::panic::take_hook());
        let inner = std::sync::Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if message.starts_with("timely communication error") {
                eprintln!("connection to another process broke ({message})");
                // Nothing of this process failed by itself: stop it here, before the
                // unwinding of timely's worker threads, whose destructors can panic
                // again on the broken channels and abort the process.
                if !FAILED_HERE.load(Ordering::SeqCst) {
                    eprintln!("Error: the job failed: {LOST}");
                    std::process::exit(1);
                }
            } else if !is_network_panic(message) {
                inner(info);
            }
        }));
        QuietNetworkPanics {
            previous: Some(previous),
        }
    }
}

impl Drop for QuietNetworkPanics {
    fn drop(&mut self) {
        // Removing the filter drops its reference to the previous hook.
        drop(std::panic::take_hook());
        if let Some(previous) = self.previous.take().and_then(std::sync::Arc::into_inner) {
            std::panic::set_hook(previous);
        }
    }
}

/// The addresses of a hosts file: one `host:port` per line, line `i` for process `i`;
/// blank lines and `#` comments are ignored. There must be exactly `processes` of them.
pub fn parse_hosts(text: &str, processes: usize) -> anyhow::Result<Vec<String>> {
    let mut addresses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let port = line
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(port))) if !host.is_empty() && port != 0 => {}
            _ => bail!(
                "line {}: `{line}` is not host:port (e.g. om-0.om:2101 or 127.0.0.1:2101, port 1..65535)",
                n + 1
            ),
        }
        if addresses.iter().any(|a| a == line) {
            bail!(
                "line {}: {line} is listed twice; each process needs its own address",
                n + 1
            );
        }
        addresses.push(line.to_string());
    }
    if addresses.len() != processes {
        bail!(
            "it lists {} addresses, but --processes is {processes}: list one host:port per process, line i for process i",
            addresses.len()
        );
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_list_one_address_per_process() {
        let text = "# process 0\nom-0.om:2101\n\n127.0.0.1:2102  # process 1\n";
        assert_eq!(
            parse_hosts(text, 2).unwrap(),
            ["om-0.om:2101", "127.0.0.1:2102"]
        );
        let err = |text: &str, n: usize| format!("{:#}", parse_hosts(text, n).unwrap_err());
        assert!(err("a:1\n", 2).contains("lists 1 addresses, but --processes is 2"));
        assert!(err("a:1\nb:2\nc:3\n", 2).contains("lists 3 addresses"));
        assert!(err("a:1\nhost\n", 2).contains("line 2: `host` is not host:port"));
        assert!(err("a:1\nb:99999\n", 2).contains("line 2"));
        assert!(err(":1\nb:2\n", 2).contains("line 1"));
        assert!(err("a:1\na:1\n", 2).contains("listed twice"));
    }

    #[test]
    fn settings_go_together_and_the_index_is_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1:2101\n127.0.0.1:2102\n").unwrap();
        assert_eq!(Cluster::from_settings(None, None, None).unwrap(), None);
        let c = Cluster::from_settings(Some(2), Some(1), Some(&hosts))
            .unwrap()
            .unwrap();
        assert_eq!((c.processes, c.process, c.addresses.len()), (2, 1, 2));
        let err =
            |n, i, h: Option<&Path>| format!("{:#}", Cluster::from_settings(n, i, h).unwrap_err());
        assert!(err(Some(2), Some(2), Some(&hosts)).contains("--process 2 is not a process"));
        assert!(err(Some(2), None, Some(&hosts)).contains("got only --processes and --hosts"));
        assert!(err(Some(3), Some(0), Some(&hosts)).contains("lists 2 addresses"));
        assert!(
            err(Some(2), Some(0), Some(&dir.path().join("none")))
                .contains("reading the hosts file")
        );
    }
}
