/**
 * The Lua scripts of the shared topic history (history.ts): a writer lock
 * held by one gateway, and appends that check it atomically.
 *
 * @module
 */

/**
 * Appends a batch if ARGV[1] still holds the lock KEYS[1]. ARGV: owner,
 * maxlen, max age ms, then per entry: stream key index (into KEYS), kind
 * (`f` frames, `s` single frame, `g` gap marker), topic or marker text,
 * payload. Returns the entries appended, or -1 when the lock is someone else's.
 */
export const APPEND_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local maxlen = ARGV[2]
local maxage = tonumber(ARGV[3])
local minid = nil
if maxage > 0 then
  local t = redis.call('TIME')
  minid = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) - maxage
end
local last = {}
local n = 0
local i = 4
while i <= #ARGV do
  local k = tonumber(ARGV[i])
  local key = KEYS[k]
  if last[k] == nil then
    local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    if top[1] then last[k] = top[1][1] else last[k] = '0-0' end
  end
  local kind = ARGV[i + 1]
  if kind == 'g' then
    last[k] = redis.call('XADD', key, 'MAXLEN', maxlen, '*', 'r', last[k], 'g', ARGV[i + 2])
  elseif kind == 'f' then
    last[k] = redis.call('XADD', key, 'MAXLEN', maxlen, '*', 'r', last[k], 'f', 'f', 't', ARGV[i + 2], 'p', ARGV[i + 3])
  else
    last[k] = redis.call('XADD', key, 'MAXLEN', maxlen, '*', 'r', last[k], 'f', 's', 'p', ARGV[i + 3])
  end
  n = n + 1
  i = i + 4
end
if minid then
  for k, _ in pairs(last) do redis.call('XTRIM', KEYS[k], 'MINID', minid) end
end
return n
`;

/** KEYS[1] lock, ARGV[1] owner, ARGV[2] ttl: refreshes the lock if it is ARGV[1]'s. */
export const REFRESH_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

/** KEYS[1] lock, ARGV[1] owner, ARGV[2] ttl: takes the lock if it is free or already ARGV[1]'s. */
export const ACQUIRE_SCRIPT = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;

/** KEYS[1] lock, ARGV[1] owner: releases the lock if it is ARGV[1]'s. */
export const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;
