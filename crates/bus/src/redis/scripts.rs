//! The Lua scripts. Each runs atomically on the server, so a check and the write and
//! publish that depend on it cannot interleave with another gateway's.
//!
//! Every script touches keys of one hash slot only (Redis Cluster): a user's directory
//! entry, presence record and channels share the tag `{user}`, the node registry shares
//! `{nodes}`, the shard registry `{sb}`. Numbers are Lua doubles, exact below 2^53:
//! session ids (unix microseconds at the first sign-in after Redis started, plus one per
//! sign-in) stay far below that.

use ::redis::Script;

/// The next session id: `INCR` of `KEYS[1]`, raised first to at least `ARGV[1]`.
///
/// A missing counter (first start, or Redis restarted without persistence) is seeded with
/// the server's clock in microseconds, so ids keep increasing across a restart even
/// before every gateway has raised the counter to its own highest live session.
const SESSION_ID: &str = r"
local floor = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if not cur then
  local t = redis.call('TIME')
  local seed = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if seed > floor then floor = seed end
end
if not cur or tonumber(cur) < floor then
  redis.call('SET', KEYS[1], string.format('%.0f', floor))
end
return redis.call('INCR', KEYS[1])
";

/// A change to a user's directory entry (`KEYS[1]`, value `session:node`) and presence
/// record (`KEYS[2]`), with the matching publish on `KEYS[3]` in the same step.
///
/// `ARGV`: mode, session, node, presence record, message, publish command (`PUBLISH` or
/// `SPUBLISH`). Modes:
/// - `claim` (attach): the directory names this session unless a newer one holds it.
/// - `publish`: like `claim`, and store the record and publish the message.
/// - `restore` (rebuilding after Redis lost data): like `publish`, but only if the stored
///   record differs, so a rebuild that finds its records in place publishes nothing.
/// - `clear` (signed out, still attached): like `claim`, and delete the record; publish
///   (offline) only if there was one.
/// - `detach`: only if the directory names this session, delete both; publish (offline)
///   only if there was a record.
/// - `reap` (the node `ARGV[3]` died): only if the directory names that node, as `detach`.
///
/// Returns 1 if the change applied, 0 if it was fenced off.
const PRESENCE: &str = r"
local mode = ARGV[1]
local s = tonumber(ARGV[2])
local me = ARGV[2] .. ':' .. ARGV[3]
local dir = redis.call('GET', KEYS[1])
local cur_s = -1
local cur_n = false
if dir then
  local i = string.find(dir, ':', 1, true)
  cur_s = tonumber(string.sub(dir, 1, i - 1))
  cur_n = string.sub(dir, i + 1)
end
if mode == 'detach' or mode == 'reap' then
  if mode == 'detach' and cur_s ~= s then return 0 end
  if mode == 'reap' and cur_n ~= ARGV[3] then return 0 end
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then
    redis.call(ARGV[6], KEYS[3], ARGV[5])
  end
  return 1
end
if cur_s > s then return 0 end
if dir ~= me then redis.call('SET', KEYS[1], me) end
if mode == 'publish' or (mode == 'restore' and redis.call('GET', KEYS[2]) ~= ARGV[4]) then
  redis.call('SET', KEYS[2], ARGV[4])
  redis.call(ARGV[6], KEYS[3], ARGV[5])
elseif mode == 'clear' then
  if redis.call('DEL', KEYS[2]) == 1 then
    redis.call(ARGV[6], KEYS[3], ARGV[5])
  end
end
return 1
";

/// Register a node: a new id from `KEYS[3]`, its owner token `ARGV[1]` in the hash
/// `KEYS[2]`, and a first heartbeat in the sorted set `KEYS[1]` (score: server time, ms).
///
/// Node ids are never reused, also across a Redis restart, so a gateway that has not yet
/// noticed the restart cannot share its old id with a newly registered one: the counter is
/// raised to at least `ARGV[2]` (the id this process had before) and a missing counter is
/// seeded with the server's clock in microseconds, as the session counter is.
const REGISTER_NODE: &str = r"
local floor = tonumber(ARGV[2])
local t = redis.call('TIME')
local cur = redis.call('GET', KEYS[3])
if not cur then
  local seed = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if seed > floor then floor = seed end
end
if not cur or tonumber(cur) < floor then
  redis.call('SET', KEYS[3], string.format('%.0f', floor))
end
local id = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], id, ARGV[1])
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now), id)
return id
";

/// Refresh node `ARGV[1]`'s heartbeat if it is still registered to owner `ARGV[2]`.
/// Returns 0 when the registration is gone: Redis lost its data, or other nodes declared
/// this one dead and removed what it owned. The caller then registers again and rebuilds.
const HEARTBEAT: &str = r"
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
return 1
";

/// Up to 16 node ids whose last heartbeat (in `KEYS[1]`) is older than `ARGV[1]` ms, by
/// the server's clock, so gateways with skewed clocks agree.
const DEAD_NODES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', cutoff), 'LIMIT', 0, 16)
";

/// Register or refresh switchboard shard `ARGV[1]`: its record `ARGV[2]` in the hash
/// `KEYS[1]`, and its expiry (server time + `ARGV[3]` ms) in the sorted set `KEYS[2]`.
const REGISTER_SHARD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
return 1
";

/// The records of the live switchboard shards (hash `KEYS[1]`), after removing those
/// whose expiry in the sorted set `KEYS[2]` has passed by the server's clock. One round
/// trip, and every key it touches is declared (Redis Cluster).
const LIVE_SHARDS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = '(' .. string.format('%.0f', now)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)) do
  redis.call('HDEL', KEYS[1], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
return redis.call('HVALS', KEYS[1])
";

/// The scripts, hashed once. `Script::invoke_async` sends `EVALSHA` and falls back to
/// loading the script when the server does not know it (first use, or after a restart).
pub(crate) struct Scripts {
    pub(crate) session_id: Script,
    pub(crate) presence: Script,
    pub(crate) register_node: Script,
    pub(crate) heartbeat: Script,
    pub(crate) dead_nodes: Script,
    pub(crate) register_shard: Script,
    pub(crate) live_shards: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            session_id: Script::new(SESSION_ID),
            presence: Script::new(PRESENCE),
            register_node: Script::new(REGISTER_NODE),
            heartbeat: Script::new(HEARTBEAT),
            dead_nodes: Script::new(DEAD_NODES),
            register_shard: Script::new(REGISTER_SHARD),
            live_shards: Script::new(LIVE_SHARDS),
        }
    }
}
