//! The Redis keys and channels of a cluster, and the scripts that change room claims
//! atomically. Every key starts with the prefix (`tsunagi:` by default), so that one
//! Redis database can hold several clusters. The scripts touch keys named inside them
//! (the owner's node record), so they need a single Redis (or a replica set), not
//! Redis Cluster.
//!
//! | key | type | value | TTL |
//! |---|---|---|---|
//! | `{p}nodes` | set | node ids ever seen live (pruned) | none |
//! | `{p}node:{id}` | string | [`NodeRecord`](crate::NodeRecord) JSON | 3 × heartbeat |
//! | `{p}draining:{id}` | string | `1` while node `id` drains | 3 × heartbeat |
//! | `{p}room:{room}` | string | owner node id | claim TTL, renewed by the owner |
//! | `{p}resume:{sha256(token)}` | string | node id holding the session | 60 s, renewed |
//! | `{p}turn:{id}` | hash | node `id`'s TURN allocations: `total`, `u:{username}` | 3 × heartbeat |
//! | `{p}to:{id}` | channel | relay batches for node `id` | — |

/// The field of a node's [`Keys::turn`] hash that holds its allocations in total.
pub const TURN_TOTAL: &str = "total";
/// The prefix of the per-username fields of a [`Keys::turn`] hash: no username can be
/// mistaken for [`TURN_TOTAL`].
pub const TURN_USER: &str = "u:";

/// Key and channel names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("tsunagi:")
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The set of node ids.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// A node's record; [`Keys::node_prefix`] + id.
    pub fn node(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }

    pub fn node_prefix(&self) -> String {
        format!("{}node:", self.prefix)
    }

    /// Set while a node drains (it takes no new rooms); [`Keys::draining_prefix`] + id.
    pub fn draining(&self, id: &str) -> String {
        format!("{}draining:{id}", self.prefix)
    }

    pub fn draining_prefix(&self) -> String {
        format!("{}draining:", self.prefix)
    }

    /// A room's claim: the id of the node that runs it.
    pub fn room(&self, room: &str) -> String {
        format!("{}room:{room}", self.prefix)
    }

    /// Where a session with this resume token lives (`token_hash`: hex SHA-256 of the
    /// token, so that the directory holds nothing a client could resume with).
    pub fn resume(&self, token_hash: &str) -> String {
        format!("{}resume:{token_hash}", self.prefix)
    }

    /// A node's TURN allocations, for `user-quota` and `total-quota` across the
    /// cluster: a hash with [`TURN_TOTAL`] and one [`TURN_USER`]`{username}` field per
    /// username that has allocations there.
    pub fn turn(&self, id: &str) -> String {
        format!("{}turn:{id}", self.prefix)
    }

    /// The relay channel of a node.
    pub fn channel(&self, id: &str) -> String {
        format!("{}to:{id}", self.prefix)
    }
}

/// Finds a room's node, or claims the room for a candidate node.
///
/// A node *serves* while its record exists and it is not draining. `KEYS[1]` the room
/// key; `ARGV[1]` the candidate node id, `ARGV[2]` the claim TTL in ms, `ARGV[3]` the
/// node record prefix, `ARGV[4]` a node id to take the room from even if it still
/// serves (it stopped answering), or `""`, `ARGV[5]` the draining prefix. Returns the
/// node that serves the room now: its current owner if that one serves, else the
/// candidate, claimed, if it serves; else nil (the caller picks another candidate).
pub const CLAIM: &str = r"
local function serving(id)
  return redis.call('EXISTS', ARGV[3] .. id) == 1 and redis.call('EXISTS', ARGV[5] .. id) == 0
end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[4] and serving(cur) then
  return cur
end
if not serving(ARGV[1]) then
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Renews a node's claims. `KEYS` the room keys; `ARGV[1]` the node id, `ARGV[2]`
/// the TTL in ms. A claim of this node is extended, a missing one is taken again
/// (Redis lost it, e.g. a restart), and the 1-based positions of rooms that another
/// node holds now are returned: this node must let them go.
pub const RENEW: &str = r"
local lost = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not cur then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
";

/// Releases a node's claims. `KEYS` the room keys; `ARGV[1]` the node id. Deletes
/// only the claims this node holds; returns how many.
pub const RELEASE: &str = r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = Keys::default();
        assert_eq!(k.nodes(), "tsunagi:nodes");
        assert_eq!(k.node("n1-0a"), "tsunagi:node:n1-0a");
        assert_eq!(k.node_prefix() + "n1-0a", k.node("n1-0a"));
        assert_eq!(k.draining_prefix() + "n1-0a", k.draining("n1-0a"));
        assert_eq!(k.room("lobby"), "tsunagi:room:lobby");
        assert_eq!(k.resume("ab12"), "tsunagi:resume:ab12");
        assert_eq!(k.turn("n1-0a"), "tsunagi:turn:n1-0a");
        assert_eq!(k.channel("n1-0a"), "tsunagi:to:n1-0a");
        assert_eq!(Keys::new("x:").room("r"), "x:room:r");
    }
}
