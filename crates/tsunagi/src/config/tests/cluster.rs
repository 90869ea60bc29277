//! The cluster options: `redis`, `node-name`, `cluster-url`, `drain-timeout`.

use super::*;

#[test]
fn no_redis_no_cluster() {
    assert_eq!(resolve(Options::default()).unwrap().cluster, None);
    // A blank variable is no value.
    assert_eq!(
        resolve(env(&[("TSUNAGI_REDIS", "")])).unwrap().cluster,
        None
    );
}

#[test]
fn cluster_options() {
    let c = resolve(cli(&[
        "--redis",
        "redis://:pw@127.0.0.1:6379/2",
        "--node-name",
        "eu-1.a_b",
        "--cluster-url",
        "wss://eu-1.example.org/ws",
        "--drain-timeout",
        "30",
    ]))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(c.redis.0, "redis://:pw@127.0.0.1:6379/2");
    assert_eq!(c.node_name, "eu-1.a_b");
    assert_eq!(c.url.as_deref(), Some("wss://eu-1.example.org/ws"));
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    // The password stays out of Debug output.
    assert!(!format!("{c:?}").contains("pw"), "{c:?}");

    let c = resolve(env(&[("TSUNAGI_REDIS", "rediss://r.example.org:6380")]))
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        c.drain_timeout,
        Duration::from_secs(defaults::DRAIN_TIMEOUT)
    );
    assert!(!c.node_name.is_empty(), "the host name by default");
    assert_eq!(c.url, None);

    let toml = Options::from_toml(
        "redis = \"redis://127.0.0.1/0\"\nnode-name = \"n7\"\n",
        "test.toml",
    )
    .unwrap();
    assert_eq!(resolve(toml).unwrap().cluster.unwrap().node_name, "n7");
}

#[test]
fn cluster_errors_say_what_to_write() {
    let e = |args: &[&str]| resolve(cli(args)).unwrap_err().0;
    let m = e(&["--redis", "127.0.0.1:6379"]);
    assert!(m.contains("redis://127.0.0.1:6379/0"), "{m}");
    let m = e(&["--redis", "redis://h", "--node-name", "a b"]);
    assert!(
        m.contains("node-name 'a b'") && m.contains("letters, digits"),
        "{m}"
    );
    let m = e(&["--redis", "redis://h", "--cluster-url", "https://x/ws"]);
    assert!(m.contains("wss://"), "{m}");
    let m = e(&["--redis", "redis://h", "--drain-timeout", "0"]);
    assert!(m.contains("drain-timeout 0 is out of range"), "{m}");
    // Cluster options without redis are a mistake, not silently ignored.
    let m = e(&["--node-name", "n1"]);
    assert!(m.contains("node-name is set but redis is not"), "{m}");
    let m = e(&["--drain-timeout", "10"]);
    assert!(m.contains("drain-timeout is set but redis is not"), "{m}");
}
