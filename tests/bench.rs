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
