"""The Lua scripts of the fenced store (mescache.store binds and calls them), each with its
KEYS and ARGV. Every key one script touches shares a hash slot (mescache.keys), so each
runs atomically on a single Redis, behind Sentinel and on Redis Cluster alike; why they
hold when any key may vanish is in mescache.store's docstring.
"""

from __future__ import annotations

# The server clock in nanoseconds (microseconds and three zeros), as text: Lua numbers are
# doubles and would round it. INCR still reads it as a 64-bit integer.
_CLOCK = """
local function clock()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2])) .. '000'
end
"""

# Reads the fences KEYS[first..last] joined by ':'; a missing one is created from the clock
# (`create`) or makes the whole token nil.
_FENCES = (
    _CLOCK
    + """
local function fences(first, last, create, ttl)
  local g = {}
  for i = first, last do
    local f = redis.call('GET', KEYS[i])
    if not f then
      if not create then return nil end
      f = clock()
      redis.call('SET', KEYS[i], f, 'PX', ttl)
    end
    g[#g + 1] = f
  end
  return table.concat(g, ':')
end
"""
)

# Moves a fence: +1, or the clock when it vanished (never back to a value read before). A
# refresh writes the value beside it, which a near copy can keep only under a fence.
_BUMP = (
    _CLOCK
    + """
local function bump(name, ttl)
  if redis.call('EXISTS', name) == 1 then redis.call('INCR', name)
  else redis.call('SET', name, clock()) end
  redis.call('PEXPIRE', name, ttl)
end
"""
)

# KEYS = value, lease, ARGV[3] fences, then the token (family members only);
# ARGV = lease ms, the lease holder's token, the number of fences, how long a fence created
# here lives (a fill's span: a request for something that does not exist leaves nothing
# behind for long; a fill outliving it is refused). Replies: {1, value} | {0, token, 0/1}.
BEGIN_FILL = (
    _FENCES
    + """
local last = 2 + tonumber(ARGV[3])
local g = fences(3, last, true, ARGV[4])
local v = redis.call('GET', KEYS[1])
if v then
  if #KEYS == last or redis.call('GET', KEYS[#KEYS]) == g then return {1, v} end
  redis.call('DEL', KEYS[1], KEYS[#KEYS])  -- filled under fences that moved since
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then return {0, g, 1} end
return {0, g, 0}
"""
)

# KEYS = value, lease, ARGV[5] fences, the token if ARGV[6] == '1', then the tag sets to
# register in; ARGV = value, TTL ms, the fence token read by begin_fill, the lease holder's
# token, the number of fences, whether a token is kept, the fence TTL. A moved or vanished
# fence refuses; a stored value's fences live as long as fences do.
FINISH_FILL = (
    _FENCES
    + """
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local last = 2 + tonumber(ARGV[5])
if fences(3, last, false) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 3, last do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
if ARGV[6] == '1' then
  last = last + 1
  redis.call('SET', KEYS[last], ARGV[3], 'PX', ARGV[2])
end
for i = last + 1, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 1
"""
)

# KEYS = value, ARGV[2] fences, then the token (family members only); ARGV = the token the
# caller holds (b"" for none), the number of fences. Replies: {0} no valid value; {1, pttl}
# the held token stands; {2, pttl, token, value} (token '' when a fence is missing: the
# value is valid, since an invalidation would have deleted it, but cannot be kept).
READ = (
    _FENCES
    + """
local last = 1 + tonumber(ARGV[2])
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then return {0} end
local g = fences(2, last, false)
if #KEYS > last then
  if not g or redis.call('GET', KEYS[#KEYS]) ~= g then return {0} end
elseif not g then
  return {2, pttl, '', redis.call('GET', KEYS[1])}
end
if g == ARGV[1] then return {1, pttl} end
return {2, pttl, g, redis.call('GET', KEYS[1])}
"""
)

# KEYS = value, fences..., then the token (family members only): all of them, as they are.
OBSERVE = """
local seen = {}
for i = 1, #KEYS do seen[i] = redis.call('GET', KEYS[i]) or false end
return seen
"""

# KEYS = lease; ARGV = the holder's token: a failed fill hands the lease back at once.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS = a sorted set of request counts; ARGV = the member, the most members kept. Bounded
# by the Space-Saving rule: a new member, once the set is full, takes the place (and the
# count, plus one) of the least requested, so a newly popular price can still rise.
COUNT = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  return redis.call('ZINCRBY', KEYS[1], 1, ARGV[1])
end
local least = redis.call('ZPOPMIN', KEYS[1])
return redis.call('ZADD', KEYS[1], tonumber(least[2]) + 1, ARGV[1])
"""

# KEYS = the counts' halving mark (the time it stands for, ms of Redis's clock); ARGV = the
# half-life in ms. Claims the halvings due since the mark: returns how many (0: none due, or
# no mark yet, which is then set), moving the mark by that many half-lives. One key, so one
# process claims each halving whichever API process asks first.
CLAIM_HALVINGS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[1]) or '')
if not last then redis.call('SET', KEYS[1], string.format('%.0f', now)) return 0 end
local n = math.floor((now - last) / tonumber(ARGV[1]))
if n < 1 then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', last + n * tonumber(ARGV[1])))
return n
"""

# KEYS = a sorted set of request counts; ARGV = the factor, the least count kept. Scales
# every count (old demand fades against new) and drops those fallen under the floor.
SCALE_COUNTS = """
local counts = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local factor = tonumber(ARGV[1])
for i = 1, #counts, 2 do
  redis.call('ZADD', KEYS[1], tonumber(counts[i + 1]) * factor, counts[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
return #counts / 2
"""

# Invalidations delete even on a full noeviction Redis (allow-oom); their keys are declared.
_LISTENER = "#!lua flags=allow-oom\n"

# Moves a fence that exists; a missing one stays missing. No fill can have read a fence
# that is not there: one that read it before it vanished finds it missing at its finish and
# stores nothing, and one that begins later creates it anew from the clock. So an
# invalidation of a key nobody filled (most keys, when a backlog is replayed) creates
# nothing.
_MOVE = """
local function move(name, ttl)
  if redis.call('EXISTS', name) == 1 then
    redis.call('INCR', name)
    redis.call('PEXPIRE', name, ttl)
  end
end
"""

# KEYS holds ARGV[1] (value, fence, lease) triples of keys, then (tag set, fence) pairs of
# families, all of one slot on a cluster; ARGV = the number of triples, the fence TTL. One
# call invalidates a whole slice of a batch. A key's value and lease go and its fence moves.
# Moving a family's fence is what invalidates its members (each checks it on every read);
# deleting those the tag set lists frees them early, in slices: unpack() of a huge table
# overflows Lua's stack. Replies the keys and members deleted.
INVALIDATE = (
    _LISTENER
    + _MOVE
    + """
local keys = 3 * tonumber(ARGV[1])
for i = 1, keys, 3 do
  redis.call('DEL', KEYS[i], KEYS[i + 2])
  move(KEYS[i + 1], ARGV[2])
end
local deleted = keys / 3
for f = keys + 1, #KEYS, 2 do
  move(KEYS[f + 1], ARGV[2])
  local members = redis.call('SMEMBERS', KEYS[f])
  for i = 1, #members, 500 do
    redis.call('DEL', unpack(members, i, math.min(i + 499, #members)))
  end
  redis.call('DEL', KEYS[f])
  deleted = deleted + #members
end
return deleted
"""
)

# KEYS = value, fence, lease[, version]; ARGV = value, TTL ms, fence TTL[, version].
# Replies: 1 written, 0 refused (an older position), 2 invalidated instead: the position
# of the value there vanished (evicted, or never set by a fill), so it may be newer.
REFRESH = (
    _LISTENER
    + _BUMP
    + """
if #KEYS >= 4 then
  local current = redis.call('GET', KEYS[4])
  -- an equal position is a replay or the delayed second pass: write it again
  if current and current > ARGV[4] then return 0 end
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[3])
  if not current then
    redis.call('DEL', KEYS[1], KEYS[3])
    bump(KEYS[2], ARGV[3])
    return 2
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
bump(KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
return 1
"""
)
