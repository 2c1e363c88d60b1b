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

/// A change to one session's entries and, when it follows, the user's presence, with the
/// matching publishes in the same step.
///
/// `KEYS`: the user's directory (hash: session → node), presence record (the user's
/// presence: `{"session":…,"node":…,"presence":…}`), presence channel, endpoint records
/// (hash: session → `<server time µs>|<presence>`, the sessions that published one), and
/// user channel. A user may have several sessions (MSNP16+ machines); the user's presence
/// is the one published last, and when that session leaves or clears it, the most recent
/// remaining one's — or offline (`null`) when none is left.
///
/// `ARGV`: mode, session, node, this session's presence (JSON, or empty), the presence
/// message up to its `presence` value (the script appends the value and `}`), publish
/// command (`PUBLISH` or `SPUBLISH`), and the message that tells the user's other sessions
/// (`EndpointsChanged`), sent only while the user has more than one session. Modes:
/// - `claim` (attach): register the session.
/// - `publish`: register, store its presence, make it the user's, publish.
/// - `restore` (rebuilding after Redis lost data): like `publish`, but the user's presence
///   is replaced (and published) only if missing, or this session's and different, so a
///   rebuild that finds its records in place publishes nothing.
/// - `clear` (signed out, still attached): drop its presence; fall back if it was the user's.
/// - `detach`: remove the session; fall back if its presence was the user's.
/// - `reap` (node `ARGV[3]` died): `detach` every session of that node.
///
/// Returns 1 if the change applied, 0 if there was nothing to change (`detach`, `reap`).
const PRESENCE: &str = r#"
local mode = ARGV[1]
local s = ARGV[2]
local node = ARGV[3]
local head = ARGV[5]
local pub = ARGV[6]

local function current()
  local r = redis.call('GET', KEYS[2])
  if not r then return nil end
  return string.match(r, '^{"session":(%d+),')
end

local function record(sess, n, pres)
  return '{"session":' .. sess .. ',"node":' .. n .. ',"presence":' .. pres .. '}'
end

local function show(sess, pres)
  local n = redis.call('HGET', KEYS[1], sess) or '0'
  redis.call('SET', KEYS[2], record(sess, n, pres))
  redis.call(pub, KEYS[3], head .. pres .. '}')
end

-- The user's presence went away: show the most recently published remaining one.
local function fall_back()
  local best, best_s, best_p = nil, nil, nil
  local all = redis.call('HGETALL', KEYS[4])
  for i = 1, #all, 2 do
    local v = all[i + 1]
    local bar = string.find(v, '|', 1, true)
    if bar then
      local at = string.sub(v, 1, bar - 1)
      if not best or #at > #best or (#at == #best and at > best) then
        best, best_s, best_p = at, all[i], string.sub(v, bar + 1)
      end
    end
  end
  if best_s then
    show(best_s, best_p)
  elseif redis.call('DEL', KEYS[2]) == 1 then
    redis.call(pub, KEYS[3], head .. 'null}')
  end
end

local function stamp()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

local function tell_others(at_least)
  if redis.call('HLEN', KEYS[1]) >= at_least then
    redis.call(pub, KEYS[5], ARGV[7])
  end
end

if mode == 'claim' then
  redis.call('HSET', KEYS[1], s, node)
  return 1
end
if mode == 'publish' or mode == 'restore' then
  redis.call('HSET', KEYS[1], s, node)
  redis.call('HSET', KEYS[4], s, stamp() .. '|' .. ARGV[4])
  local cur = current()
  if mode == 'publish' or not cur
      or (cur == s and redis.call('GET', KEYS[2]) ~= record(s, node, ARGV[4])) then
    show(s, ARGV[4])
  end
  if mode == 'publish' then tell_others(2) end
  return 1
end
if mode == 'clear' then
  redis.call('HSET', KEYS[1], s, node)
  if redis.call('HDEL', KEYS[4], s) == 1 then
    if current() == s then fall_back() end
    tell_others(2)
  end
  return 1
end
local gone = {}
if mode == 'detach' then
  if redis.call('HDEL', KEYS[1], s) == 1 then gone[s] = true end
else
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if all[i + 1] == node then
      redis.call('HDEL', KEYS[1], all[i])
      gone[all[i]] = true
    end
  end
end
if next(gone) == nil then return 0 end
for sess in pairs(gone) do redis.call('HDEL', KEYS[4], sess) end
local cur = current()
if (cur and gone[cur]) or redis.call('HLEN', KEYS[1]) == 0 then fall_back() end
tell_others(1)
return 1
"#;

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
