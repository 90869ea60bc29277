//! What each node publishes about itself, and where a new room goes.

use serde::{Deserialize, Serialize};

/// A node's entry in the directory (`tsunagi:node:{id}`, JSON), refreshed every
/// heartbeat with a short TTL: a node is live exactly while its record exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// `{name}-{run}`: the name (`node-name`) and 8 hex digits drawn at each start,
    /// so that a restarted node is a new node (its old sessions are gone).
    pub id: String,
    pub name: String,
    pub version: String,
    /// Unix time (ms) of the start and of this record.
    pub started_ms: u64,
    pub updated_ms: u64,
    /// Signaling URL of this node (`cluster-url`), offered in `rejoin` when a node
    /// drains; `None` when it has none to offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP(S) listeners (`ip:port`) and whether they speak TLS.
    #[serde(default)]
    pub http: Vec<String>,
    pub tls: bool,
    /// STUN/TURN host and port as clients are told (`public-host` or the bound IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
    /// SFU UDP port, when an SFU runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sfu_port: Option<u16>,
    /// Takes no new rooms (`POST /api/drain` or SIGTERM).
    pub draining: bool,
    pub load: Load,
}

/// A node's load when it last published.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Rooms this node runs.
    pub rooms: u64,
    /// Peers in those rooms.
    pub peers: u64,
    /// Signaling WebSockets this node holds (its own rooms' and relayed ones).
    pub connections: u64,
    /// Of those, the ones relayed to another node's room.
    pub relayed: u64,
    /// Packets per second the SFU forwarded.
    pub forwarded_pps: u64,
    /// CPU this process used over the last second, in percent of one core.
    pub cpu_percent: f64,
    /// Cores this process may use.
    pub cores: u32,
}

impl Load {
    /// CPU in use as a fraction of the cores this process may use (0 to 1).
    pub fn cpu_share(&self) -> f64 {
        self.cpu_percent / 100.0 / f64::from(self.cores.max(1))
    }
}

/// Above this CPU share a node gets a new room only when every node is above it.
pub const BUSY_CPU_SHARE: f64 = 0.85;

/// Where a new room goes: among live nodes that are not draining, those under
/// [`BUSY_CPU_SHARE`] (or all of them, when none is), the one with the fewest peers,
/// then the fewest rooms, then the smallest id (so that every node picks the same one
/// from the same records). `None` when every node is draining.
pub fn choose<'a>(nodes: impl IntoIterator<Item = &'a NodeRecord>) -> Option<&'a NodeRecord> {
    let open: Vec<&NodeRecord> = nodes.into_iter().filter(|n| !n.draining).collect();
    let idle: Vec<&NodeRecord> = open
        .iter()
        .copied()
        .filter(|n| n.load.cpu_share() < BUSY_CPU_SHARE)
        .collect();
    let pool = if idle.is_empty() { open } else { idle };
    pool.into_iter().min_by(|a, b| {
        (a.load.peers, a.load.rooms, &a.id).cmp(&(b.load.peers, b.load.rooms, &b.id))
    })
}

/// Whether `id` is a usable node name: 1 to 40 of `a-z A-Z 0-9 - _ .`.
pub fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, peers: u64, rooms: u64, cpu: f64, draining: bool) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            name: id.into(),
            version: "0.1.0".into(),
            started_ms: 1,
            updated_ms: 2,
            url: None,
            http: vec!["127.0.0.1:8080".into()],
            tls: false,
            turn: Some("127.0.0.1:3478".into()),
            sfu_port: Some(7882),
            draining,
            load: Load {
                rooms,
                peers,
                cpu_percent: cpu,
                cores: 2,
                ..Load::default()
            },
        }
    }

    #[test]
    fn the_least_loaded_open_node_gets_the_room() {
        let nodes = [
            node("a", 10, 2, 10.0, false),
            node("b", 3, 1, 10.0, false),
            node("c", 0, 0, 5.0, true),
        ];
        assert_eq!(choose(&nodes).unwrap().id, "b", "c drains");
        let nodes = [node("b", 3, 2, 0.0, false), node("a", 3, 2, 0.0, false)];
        assert_eq!(choose(&nodes).unwrap().id, "a", "ties go to the smaller id");
        let nodes = [node("a", 3, 3, 0.0, false), node("b", 3, 2, 0.0, false)];
        assert_eq!(choose(&nodes).unwrap().id, "b", "then fewer rooms");
    }

    #[test]
    fn busy_nodes_only_when_all_are_busy() {
        // 180 % of one core on 2 cores = 0.9 share.
        let nodes = [node("a", 0, 0, 180.0, false), node("b", 40, 9, 20.0, false)];
        assert_eq!(choose(&nodes).unwrap().id, "b");
        let nodes = [
            node("a", 0, 0, 180.0, false),
            node("b", 40, 9, 190.0, false),
        ];
        assert_eq!(choose(&nodes).unwrap().id, "a");
        assert!(choose(&[node("a", 0, 0, 0.0, true)]).is_none());
        assert!(choose(&[]).is_none());
    }

    #[test]
    fn records_round_trip_as_json() {
        let n = node("n1-00ff00ff", 1, 1, 12.5, false);
        let text = serde_json::to_string(&n).unwrap();
        assert!(text.contains("\"startedMs\":1"), "{text}");
        assert!(text.contains("\"cpuPercent\":12.5"), "{text}");
        assert_eq!(serde_json::from_str::<NodeRecord>(&text).unwrap(), n);
    }

    #[test]
    fn names() {
        assert!(valid_name("node-1.eu_west"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name(&"a".repeat(41)));
    }
}
