use super::*;

#[test]
fn spread_is_the_median_and_the_range() {
    assert_eq!(spread(&[0.9, 0.7, 0.8]), (0.8, 0.7, 0.9));
    assert_eq!(spread(&[1.0, 0.6, 0.8, 0.7]), (0.75, 0.6, 1.0));
    assert_eq!(spread(&[0.5]), (0.5, 0.5, 0.5));
    assert!(spread(&[]).0.is_nan());
}

#[test]
fn a_round_is_judged_against_its_own_ceiling() {
    let measured = |calls: u64| Measured {
        calls,
        elapsed: Duration::from_secs(1),
        ..Default::default()
    };
    let round = Round {
        order: "echo, service, pgbench",
        service: measured(600),
        baseline: Baseline::Ceiling {
            echo: measured(3000),
            pgbench: Pgbench {
                tps: 1000.0,
                ..Default::default()
            },
        },
    };
    // L = 1 / (1/3000 + 1/1000) = 750.
    assert!((round.baseline.rate() - 750.0).abs() < 1e-9);
    assert!((round.ratio(Scenario::GetContact) - 0.8).abs() < 1e-9);
}

#[test]
fn merged_windows_add_up() {
    let a = Measured {
        calls: 10,
        elapsed: Duration::from_secs(2),
        latencies: vec![1, 5],
        server_peak_rss_kib: 7,
        ..Default::default()
    };
    let b = Measured {
        calls: 30,
        elapsed: Duration::from_secs(2),
        latencies: vec![3],
        server_peak_rss_kib: 9,
        first_error: Some("late".into()),
        ..Default::default()
    };
    let all = Measured::merge([&a, &b]);
    assert_eq!(all.throughput(), 10.0);
    assert_eq!(all.latencies, vec![1, 3, 5]);
    assert_eq!(all.server_peak_rss_kib, 9);
    assert_eq!(all.first_error.as_deref(), Some("late"));
}
