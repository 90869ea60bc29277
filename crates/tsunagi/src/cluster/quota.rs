//! `user-quota` and `total-quota` across the nodes: every heartbeat this node writes
//! its TURN allocations (the sum over its workers, from the TURN runtime's
//! [`QuotaBoard`](crate::turn_runtime::quota::QuotaBoard)) to its hash `tsunagi:turn:{id}` (`total`, and `u:{username}` per
//! username with allocations; TTL [`NODE_TTL`]), and reads the other live nodes' hashes
//! into the board, where the workers count them at their next exchange. The hash is
//! rewritten whole in one transaction, so it holds exactly the live allocations'
//! usernames: a node with none has no hash.
//!
//! The other nodes' counts hold for [`NODE_TTL`] after they were read: while Redis is
//! away they lapse, and each node counts its own allocations only (granting more than
//! the cluster-wide quota rather than refusing on stale counts). Usernames are never
//! logged here.

use super::*;

use tsunagi_cluster::keys::{TURN_TOTAL, TURN_USER};
use tsunagi_turn::Usage;

/// One heartbeat's exchange: publishes this node's usage and reads the other `nodes`'
/// into the board. Nothing without a quota (no board).
pub(super) async fn sync(
    inner: &Inner,
    conn: &mut ConnectionManager,
    nodes: &HashMap<Arc<str>, NodeRecord>,
) -> redis::RedisResult<()> {
    let Some(board) = &inner.options.turn_quota else {
        return Ok(());
    };
    let k = &inner.keys;
    let key = k.turn(&inner.id);
    let mine = board.node_usage();
    let others: Vec<&Arc<str>> = nodes.keys().filter(|id| **id != inner.id).collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("DEL").arg(&key).ignore();
    if mine.total > 0 {
        let mut hset = redis::cmd("HSET");
        hset.arg(&key).arg(TURN_TOTAL).arg(mine.total);
        for (name, n) in &mine.per_user {
            if *n > 0 {
                hset.arg(format!("{TURN_USER}{name}")).arg(*n);
            }
        }
        pipe.add_command(hset).ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(NODE_TTL.as_millis() as u64)
            .ignore();
    }
    for id in &others {
        pipe.cmd("HGETALL").arg(k.turn(id));
    }
    let hashes: Vec<HashMap<String, String>> = with_timeout(pipe.query_async(conn)).await?;
    let mut elsewhere = Usage::default();
    for h in &hashes {
        elsewhere.add(&parse(h));
    }
    board.set_other_nodes(elsewhere, NODE_TTL);
    Ok(())
}

/// A node's hash as counts; fields that are not counts are skipped (another version,
/// or garbage), never trusted to panic anything.
fn parse(hash: &HashMap<String, String>) -> Usage {
    let mut u = Usage::default();
    for (field, value) in hash {
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        if field == TURN_TOTAL {
            u.total = n;
        } else if let Some(name) = field.strip_prefix(TURN_USER) {
            if n > 0 {
                u.per_user.insert(name.to_owned(), n);
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_into_counts_and_skip_garbage() {
        let h: HashMap<String, String> = [
            ("total", "3"),
            ("u:alice", "2"),
            ("u:1700000000:bob", "1"),
            ("u:", "0"),
            ("u:eve", "-1"),
            ("u:mallory", "lots"),
            ("other", "9"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let u = parse(&h);
        assert_eq!(u.total, 3);
        assert_eq!(u.user("alice"), 2);
        assert_eq!(u.user("1700000000:bob"), 1);
        assert_eq!(u.per_user.len(), 2);
        assert_eq!(parse(&HashMap::new()), Usage::default());
    }
}
