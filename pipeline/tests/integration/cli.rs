//! Clear errors at the command line: each names the bad input and the fix.

use std::process::Command;

fn fails_with(args: &[&str], want: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    for w in want {
        assert!(err.contains(w), "{args:?}: stderr `{err}` lacks `{w}`");
    }
}

#[test]
fn bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[meters]]\nname = \"x\"\nevent_type = \"t\"\naggregation = \"summ\"\n",
    )
    .unwrap();
    let events = tmp.path().join("e.jsonl");
    std::fs::write(&events, "{}\n").unwrap();
    let ev = format!("file:{}", events.display());
    let data = tmp.path().join("d");
    let data = data.to_str().unwrap();
    fails_with(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--events",
            &ev,
            "--data",
            data,
        ],
        &["meters[0].aggregation", "unique_count", "bad.toml"],
    );
    fails_with(
        &[
            "run",
            "--events",
            "kafka://localhost:9092/t",
            "--data",
            data,
        ],
        &["--events", "file:PATH"],
    );
    fails_with(
        &[
            "run",
            "--events",
            "file:/nonexistent/x.jsonl",
            "--data",
            data,
        ],
        &["/nonexistent/x.jsonl"],
    );
    fails_with(
        &["query", "--data", data, "--format", "xml", "SELECT 1"],
        &["xml", "table, csv or json"],
    );
    fails_with(
        &["run", "--events", &ev, "--data", "ftp://x/y"],
        &["ftp://x/y", "memory://"],
    );
    // A location that already holds tables is not silently mixed into.
    super::common::openmonetize(&["run", "--events", &ev, "--data", data, "--quiet"]);
    fails_with(
        &["run", "--events", &ev, "--data", data],
        &["already holds tables"],
    );
    fails_with(
        &["query", "--data", data, "SELECT nope FROM usage_windows"],
        &["nope"],
    );
}
