//! The Lua scripts of the Redis backend (`redis.rs`): one per operation,
//! each after [`COMMON`] (its helpers: the namespace's keys from `ARGV[1]`,
//! the server's clock, dropping an entry, forgetting the expired ones,
//! evicting down to the limits), and the forms of their arguments. The key
//! layout is described in `redis.rs`.

use std::time::Duration;

use super::call::Lua;

/// Escapes a namespace name so that it holds no `:`, `{`, `}`.
pub(super) fn escape(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for ch in name.chars() {
        match ch {
            '%' => s.push_str("%25"),
            ':' => s.push_str("%3A"),
            '{' => s.push_str("%7B"),
            '}' => s.push_str("%7D"),
            c => s.push(c),
        }
    }
    s
}

/// The longest time a script is given, in milliseconds (about 317 years):
/// a script's numbers are Lua's doubles, and one Redis formats with an
/// exponent (`1e+17`) is refused by `SET ... PX` ("value is not an integer
/// or out of range"), so a longer TTL (`Duration::MAX` for "no expiry")
/// failed every store. Under 10^13 every version formats it as digits.
pub(super) const LONGEST_MS: i64 = 9_999_999_999_999;

/// `d` in whole milliseconds (at least 1 if not zero, at most
/// [`LONGEST_MS`]), as a script takes it.
pub(super) fn ms(d: Duration) -> i64 {
    let m = d.as_millis();
    let m = if m == 0 && !d.is_zero() { 1 } else { m };
    i64::try_from(m).unwrap_or(i64::MAX).min(LONGEST_MS)
}

/// A limit as a script takes it: `-1` for none.
pub(super) fn limit_arg(v: Option<u64>) -> i64 {
    v.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

const COMMON: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local pre = ARGV[1]
local meta, lru, exp, sizes = pre..'meta', pre..'lru', pre..'exp', pre..'sizes'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop(k)
  local sz = redis.call('HGET', sizes, k)
  if sz then
    redis.call('HINCRBY', meta, 'bytes', -tonumber(sz))
    redis.call('HDEL', sizes, k)
  end
  redis.call('ZREM', lru, k)
  redis.call('ZREM', exp, k)
  redis.call('DEL', pre..'v:'..k)
  return sz ~= false
end
local function purge(now)
  local dead = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, k in ipairs(dead) do drop(k) end
end
local function num(f)
  local v = redis.call('HGET', meta, f)
  if v then return tonumber(v) end
  return -1
end
local function evict()
  local maxsize, maxb = num('maxsize'), num('max_bytes')
  local n = 0
  while true do
    local count = redis.call('ZCARD', lru)
    local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
    if count == 0 then break end
    if not ((maxsize >= 0 and count > maxsize) or (maxb >= 0 and bytes > maxb)) then break end
    drop(redis.call('ZRANGE', lru, 0, 0)[1])
    n = n + 1
  end
  if n > 0 then redis.call('HINCRBY', meta, 'evictions', n) end
end
local function stamp() return redis.call('HINCRBY', meta, 'clock', 1) end
-- The value of key k if it is an entry: its value AND its place in the LRU
-- set. A value the set does not list is an orphan (the server evicted the
-- set, or the value outlived a CLEAR that could not see it): deleted, a
-- miss; else a CLEAR, which deletes the values the set lists, would leave
-- it to be served.
local function live(k)
  local v = redis.call('GET', pre..'v:'..k)
  if v and not redis.call('ZSCORE', lru, k) then
    drop(k)
    return false
  end
  return v
end
"#;

const GET: &str = r#"
purge(now_ms())
local out = {}
local hits, misses = 0, 0
for i = 2, #ARGV do
  local k = ARGV[i]
  local v = live(k)
  if v then
    redis.call('ZADD', lru, stamp(), k)
    hits = hits + 1
    out[i - 1] = v
  else
    misses = misses + 1
    out[i - 1] = false
  end
end
if hits > 0 then redis.call('HINCRBY', meta, 'hits', hits) end
if misses > 0 then redis.call('HINCRBY', meta, 'misses', misses) end
return out
"#;

/// [`GET`] of one key by a caller that counted its miss already: a hit
/// counts, a miss does not (`Namespace::recheck`).
const RECHECK: &str = r#"
purge(now_ms())
local k = ARGV[2]
local v = live(k)
if v then
  redis.call('ZADD', lru, stamp(), k)
  redis.call('HINCRBY', meta, 'hits', 1)
end
return v
"#;

const PUT: &str = r#"
if redis.call('HEXISTS', meta, 'maxsize') == 0 then
  -- The namespace's record is gone (a restart without persistence, a
  -- FLUSHDB): restore it from the limits this client knows.
  redis.call('HSET', meta, 'maxsize', ARGV[3], 'max_bytes', ARGV[4], 'ttl', ARGV[5])
  redis.call('SADD', ARGV[6], ARGV[7])
end
local now = now_ms()
purge(now)
local maxsize, maxb = num('maxsize'), num('max_bytes')
if maxsize == 0 then return 0 end
local ttl = tonumber(ARGV[2])
if ttl < 0 then ttl = num('ttl') end
for i = 8, #ARGV, 2 do
  local k, v = ARGV[i], ARGV[i + 1]
  drop(k)
  local sz = #k + #v
  if (maxb < 0 or sz <= maxb) and ttl ~= 0 then
    if ttl > 0 then
      redis.call('SET', pre..'v:'..k, v, 'PX', ttl)
      redis.call('ZADD', exp, now + ttl, k)
    else
      redis.call('SET', pre..'v:'..k, v)
    end
    redis.call('HSET', sizes, k, sz)
    redis.call('HINCRBY', meta, 'bytes', sz)
    redis.call('ZADD', lru, stamp(), k)
  end
end
evict()
return 1
"#;

const REMOVE: &str = r#"
purge(now_ms())
if drop(ARGV[2]) then return 1 end
return 0
"#;

const CLEAR: &str = r#"
local keys = redis.call('ZRANGE', lru, 0, -1)
for _, k in ipairs(keys) do redis.call('DEL', pre..'v:'..k) end
redis.call('DEL', lru, exp, sizes)
redis.call('HSET', meta, 'bytes', 0, 'hits', 0, 'misses', 0, 'evictions', 0)
return 1
"#;

const STATS: &str = r#"
purge(now_ms())
local function n(f) return tonumber(redis.call('HGET', meta, f) or '0') end
return {redis.call('ZCARD', lru), n('bytes'), n('hits'), n('misses'), n('evictions')}
"#;

const SET_LIMITS: &str = r#"
redis.call('HSET', meta, 'maxsize', ARGV[2], 'max_bytes', ARGV[3], 'ttl', ARGV[4])
redis.call('SADD', ARGV[5], ARGV[6])
purge(now_ms())
evict()
return 1
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Every script, with the SHA-1 `EVALSHA` names it by.
pub(super) struct Scripts {
    pub(super) get: Lua,
    pub(super) recheck: Lua,
    pub(super) put: Lua,
    pub(super) remove: Lua,
    pub(super) clear: Lua,
    pub(super) stats: Lua,
    pub(super) set_limits: Lua,
    pub(super) release: Lua,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let s = |body: &str| Lua::new(format!("{COMMON}{body}"));
        Scripts {
            get: s(GET),
            recheck: s(RECHECK),
            put: s(PUT),
            remove: s(REMOVE),
            clear: s(CLEAR),
            stats: s(STATS),
            set_limits: s(SET_LIMITS),
            release: Lua::new(RELEASE.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_stays_within_what_a_script_takes() {
        assert_eq!(ms(Duration::ZERO), 0);
        assert_eq!(ms(Duration::from_micros(1)), 1);
        assert_eq!(ms(Duration::from_secs(2)), 2000);
        assert_eq!(ms(Duration::MAX), LONGEST_MS);
        assert_eq!(ms(Duration::from_secs(u64::MAX / 1000)), LONGEST_MS);
    }
}
