//! The benchmark command runs end to end and reports what it promises (figures are
//! printed, never asserted: timings belong to the benchmark, not to tests).

#[test]
fn fba_bench_runs_a_local_cluster_and_reports_json() {
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_fba_bench"))
        .args(["--nodes", "4", "--down", "1", "--clients", "3", "--requests", "60", "--keys", "5", "--json"])
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON report");
    assert_eq!(report["requests"], 60);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["down"], 1);
    for field in ["p50_us", "p95_us", "p99_us", "max_us"] {
        assert!(report["latency"][field].as_u64().is_some_and(|v| v > 0), "{field}: {report}");
    }
    assert!(
        report["floor"]["udp_round_trip_us"].is_u64() && report["floor"]["fsynced_atomic_write_us"].is_u64()
    );
    assert!(report["max_node_rss_kib"].as_u64().is_some_and(|v| v > 0));
    assert!(report["requests_per_second"].as_f64().is_some_and(|v| v > 0.0));
}

/// `--wallets N` creates N wallets before the run (which then uses them as its keys), and
/// `--restart` kills a node with `kill -9`, starts it again and reports how long it took
/// to answer: the large-data figures of the README.
#[test]
fn fba_bench_creates_wallets_first_and_measures_a_restart() {
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_fba_bench"))
        .args(["--clients", "2", "--requests", "40", "--wallets", "1200", "--restart", "--json"])
        .timeout(std::time::Duration::from_secs(90))
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON report");
    assert_eq!(report["wallets"], 1200);
    assert_eq!(report["failed"], 0);
    assert!(report["restart_seconds"].as_f64().is_some_and(|s| s > 0.0), "{report}");
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(stderr.contains("created 1200 wallets"), "{stderr}");
}
