"""The Lua scripts that change repository state atomically.

Every script touches only keys of one virtual storage (one hash slot, see
``keys.py``), and every script that changes a repository ends with
``publish_change``: bump the virtual storage's version, stamp the repository
hash with it and append the repository's new state to the change stream, so
routers' caches see every change exactly in version order.

Scripts are sent with EVALSHA; redis-py loads them (SCRIPT LOAD) the first
time a server answers NOSCRIPT, e.g. after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

__all__ = ["Scripts"]

_PRELUDE = r"""
local function hgetall_table(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Bump the virtual storage's version, stamp the repository with it and
-- append the repository's new state ('' when it is gone) to the change
-- stream. The change stream is capped (MAXLEN ~): a cache that falls behind
-- the cap sees a version gap and re-reads everything.
local function publish_change(version_key, changes_key, repo_key, path, maxlen)
  local version = redis.call('INCR', version_key)
  local state = ''
  if redis.call('EXISTS', repo_key) == 1 then
    redis.call('HSET', repo_key, 'version', version)
    state = cjson.encode(hgetall_table(repo_key))
  end
  redis.call('XADD', changes_key, 'MAXLEN', '~', maxlen, '*', 'v', version, 'p', path, 'r', state)
  return version, state
end

-- Redis's clock in ms: leases never depend on the routers' clocks.
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The copy leases of a repository (a ZSET, member '<lease id>:<target>',
-- score its expiry in ms): drops the expired ones and returns
-- {target = ms until its last lease expires} for the others.
local function copy_leases(lease_key, now)
  redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
  local leased = {}
  local flat = redis.call('ZRANGE', lease_key, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    local target = string.match(flat[i], '^[^:]*:(.*)$')
    local left = tonumber(flat[i + 1]) - now
    if target and (leased[target] == nil or left > leased[target]) then leased[target] = left end
  end
  return leased
end
"""

# Record a mutation (or track a repository): the generation bump, one event
# per target and the clearing of the intent happen together or not at all.
#
# A write taken by a node that is no longer the repository's primary (the
# primary moved while the write was in flight) must not be recorded: its
# generation would make that node's copy the newest, to be replicated over
# the primary's. With check 'refuse' or 'repair', ARGV primary is the node
# the write was routed to, and a tracked repository whose stored primary
# differs is refused with status 'moved' and no generation bump. 'repair'
# also brings the node that took the write (source) back in line with the
# primary, in the same call: its replica generation is dropped (its copy
# holds a change nobody acknowledged: it is no longer a copy of any
# generation, so it serves no reads and wins no election), one event from
# the primary to it is queued, and the intent is cleared.
#
# KEYS: repo, repos, version, changes, intents, events(target)...,
#       events(source) (only with check 'repair')
# ARGV: path, change, source, assigned (canonical JSON list), primary (for a
#       new repository; the expected one with a check), intent id (or ''),
#       changes maxlen, mode ('record' or 'track'), created_at, virtual
#       storage, trace (JSON), check ('', 'refuse' or 'repair'), target...
# With a check, a write whose node (the primary) has no replica generation is
# refused too, with status 'missing' (and the intent cleared): verification
# found that node's repository gone, and a write into what is left must not
# become the repository's newest generation.
#
# Returns {status, generation, version, state}; status is 'ok', 'stale' (the
# caller's assignment differs: state holds the stored one), 'exists' (mode
# 'track' on a tracked repository: state holds it), 'moved' (state holds
# the repository after the refusal; version is 0 when nothing changed) or
# 'missing' (state holds the repository; nothing changed).
_RECORD_MUTATION = r"""
local repo, repos, version_key, changes, intents = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local path, change, source, assigned = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local primary, intent, maxlen, mode = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local created_at, vs, trace, check = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local first_target = 13
local target_count = #ARGV - first_target + 1
local repair_stream = nil
if check == 'repair' then repair_stream = KEYS[6 + target_count] end
-- Redis does not roll a script back when a command fails half-way, so check
-- every key before the first write: all of it happens, or none.
local expected = {'hash', 'set', 'string', 'stream', 'hash'}
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  local want = expected[i] or 'stream'
  if kind ~= 'none' and kind ~= want then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. kind .. ', expected a ' .. want)
  end
end
local exists = redis.call('EXISTS', repo) == 1
if exists then
  if mode == 'track' then
    return {'exists', 0, 0, cjson.encode(hgetall_table(repo))}
  end
  local current = redis.call('HGET', repo, 'primary')
  if check ~= '' and current and current ~= '' and current ~= primary then
    local generation = tonumber(redis.call('HGET', repo, 'generation'))
    if check ~= 'repair' or source == '' or source == current then
      return {'moved', generation, 0, cjson.encode(hgetall_table(repo))}
    end
    redis.call('HDEL', repo, 'g:' .. source)
    local version, state = publish_change(version_key, changes, repo, path, maxlen)
    -- The repair needs the primary's copy, whatever its generation (it may
    -- trail the repository's for a moment after an election).
    local from = tonumber(redis.call('HGET', repo, 'g:' .. current) or generation)
    if from > generation then from = generation end
    redis.call('XADD', repair_stream, '*',
      'vs', vs, 'path', path, 'change', 'update', 'source', current, 'target', source,
      'generation', from, 'sequence', version, 'created_at', created_at,
      'trace', trace, 'attempt', 0, 'not_before', 0)
    if intent ~= '' then redis.call('HDEL', intents, intent) end
    return {'moved', generation, version, state}
  end
  -- The primary has no replica generation: verification found its
  -- repository gone (a dead disk replaced by an empty one). Whatever the write
  -- did there is not a copy of any generation; recorded, it would become the
  -- newest and be replicated over the real copies. Refused; the intent is
  -- cleared (the node's copy is replaced when a replica takes over).
  if check ~= '' and change ~= 'delete' and source ~= ''
     and not redis.call('HGET', repo, 'g:' .. source) then
    if intent ~= '' then redis.call('HDEL', intents, intent) end
    return {'missing', tonumber(redis.call('HGET', repo, 'generation')), 0,
            cjson.encode(hgetall_table(repo))}
  end
  local stored = redis.call('HGET', repo, 'assigned')
  if stored ~= assigned then
    return {'stale', 0, 0, stored or '[]'}
  end
end
local generation
if change == 'delete' then
  generation = 0
  if exists then
    generation = tonumber(redis.call('HGET', repo, 'generation')) + 1
    redis.call('DEL', repo)
  end
  redis.call('SREM', repos, path)
elseif not exists then
  generation = 0
  redis.call('HSET', repo, 'generation', 0, 'primary', primary, 'assigned', assigned,
             'created_at', created_at)
  if source ~= '' then redis.call('HSET', repo, 'g:' .. source, 0) end
  redis.call('SADD', repos, path)
else
  generation = redis.call('HINCRBY', repo, 'generation', 1)
  if source ~= '' then redis.call('HSET', repo, 'g:' .. source, generation) end
end
local version, state = publish_change(version_key, changes, repo, path, maxlen)
for i = 1, target_count do
  redis.call('XADD', KEYS[5 + i], '*',
    'vs', vs, 'path', path, 'change', change, 'source', source,
    'target', ARGV[first_target + i - 1],
    'generation', generation, 'sequence', version, 'created_at', created_at,
    'trace', trace, 'attempt', 0, 'not_before', 0)
end
if intent ~= '' then redis.call('HDEL', intents, intent) end
return {'ok', generation, version, state}
"""

# A replica's generation only moves forward, and never past the repository's.
# KEYS: repo, version, changes. ARGV: path, storage, generation, maxlen.
# Returns {changed (-1 untracked, 0 no, 1 yes), generation now, version, state}.
_SET_REPLICA_GENERATION = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, -1, 0, ''} end
local wanted = tonumber(ARGV[3])
local repository_generation = tonumber(redis.call('HGET', KEYS[1], 'generation'))
if wanted > repository_generation then wanted = repository_generation end
local current = redis.call('HGET', KEYS[1], 'g:' .. ARGV[2])
if current and tonumber(current) >= wanted then return {0, tonumber(current), 0, ''} end
redis.call('HSET', KEYS[1], 'g:' .. ARGV[2], wanted)
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], ARGV[1], ARGV[4])
return {1, wanted, version, state}
"""

# After ReplicateRepository copied source S into target T, raise T to G (the
# generation S had when the copy was planned), but only while that copy can
# still be a copy of generation G.
#
# The test is "S's generation is still >= G", not "S is still up to date".
# S's generation only ever goes down by being dropped: S took a write it had
# no right to (a former primary's, refused) or an intent of S was settled
# against it. Either way S's copy held a change nobody acknowledged, and T
# may have copied it. Everything else keeps S's copy a true copy of G: S
# taking writes as primary (G -> G+1, T holds at least G), another node
# taking writes while S stays at G (S is outdated but its copy is still
# generation G), a move of the primary. "Up to date" would refuse all of
# those, so a target replicated from a secondary would never be raised
# under steady writes, and a worker that used a merely sufficient source
# (generation >= the event's) never either.
# S not the primary but with an open intent on this path is refused too:
# such a write is on S's disk (maybe in T's copy now) and is about to be
# refused, its drop not yet recorded.
# The source checked is the one the copy used, whichever the worker picked:
# the event's own source is only a hint.
#
# Also refused: a repository created again since the plan (another life:
# its generations mean other contents), and a target that is the primary
# now (it became primary during the copy: nothing is raised, the caller
# reports that the copy may have overwritten writes it took as primary).
# The copy lease (see _TAKE_COPY_LEASE) makes that last case unreachable
# while the lease holds; the check stays as a defence.
#
# The copy's lease (ARGV lease id, '' for none) is released first, whatever
# the outcome: the copy is over, elections need not wait for it any more.
#
# KEYS: repo, version, changes, intents, copy leases. ARGV: path, target,
# generation G, maxlen, source, created_at at the plan ('' not checked),
# lease id.
# Returns {status, target's generation, source's generation (-1: none),
# version, state}; status 'raised', 'unchanged' (T already >= G),
# 'untracked', 'recreated', 'target-primary', 'source-behind' (S's
# generation was dropped or is below G) or 'source-in-flight'.
_RAISE_AFTER_COPY = r"""
if ARGV[7] ~= '' then redis.call('ZREM', KEYS[5], ARGV[7] .. ':' .. ARGV[2]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'untracked', -1, -1, 0, ''} end
local path, target, wanted, source = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]
local have = tonumber(redis.call('HGET', KEYS[1], 'g:' .. target) or '-1')
local source_has = tonumber(redis.call('HGET', KEYS[1], 'g:' .. source) or '-1')
local created_at = tonumber(redis.call('HGET', KEYS[1], 'created_at') or '')
if ARGV[6] ~= '' and created_at ~= tonumber(ARGV[6]) then
  return {'recreated', have, source_has, 0, ''}
end
local primary = redis.call('HGET', KEYS[1], 'primary') or ''
if primary == target then return {'target-primary', have, source_has, 0, ''} end
if source_has < wanted then return {'source-behind', have, source_has, 0, ''} end
if primary ~= source then
  for _, text in ipairs(redis.call('HVALS', KEYS[4])) do
    local ok, intent = pcall(cjson.decode, text)
    if ok and type(intent) == 'table' and intent.path == path and intent.node == source then
      return {'source-in-flight', have, source_has, 0, ''}
    end
  end
end
local repository_generation = tonumber(redis.call('HGET', KEYS[1], 'generation'))
if wanted > repository_generation then wanted = repository_generation end
if have >= wanted then return {'unchanged', have, source_has, 0, ''} end
redis.call('HSET', KEYS[1], 'g:' .. target, wanted)
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], path, ARGV[4])
return {'raised', wanted, source_has, version, state}
"""

# A copy lease: taken by a worker before ReplicateRepository into a target
# (a mirror fetch that overwrites and prunes the target's refs), released by
# _RAISE_AFTER_COPY or _RELEASE_COPY_LEASE when the copy is over. While it
# holds, no election or move makes the target primary, so the target takes
# no write that the copy could then overwrite. Refused when the target is
# the primary now: the two checks are atomic with each other, so either the
# lease comes first (the election skips the target) or the election does
# (the worker does not copy).
#
# Each copy has its own member ('<lease id>:<target>'), so a second worker
# copying into the same target keeps its lease when the first releases its
# own. The expiry is Redis time + ttl: a worker that dies mid-copy holds
# elections back at most that long (the caller's ttl outlasts its call's
# deadline, after which the node has stopped the copy).
#
# KEYS: repo, copy leases. ARGV: target, lease id, ttl ms.
# Returns {status, expiry ms}; status 'leased', 'target-primary' or
# 'untracked'.
_TAKE_COPY_LEASE = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'untracked', 0} end
if (redis.call('HGET', KEYS[1], 'primary') or '') == ARGV[1] then return {'target-primary', 0} end
local now = redis_now_ms()
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2] .. ':' .. ARGV[1])
-- The set disappears on its own when its last lease expires.
local left = redis.call('PTTL', KEYS[2])
if left < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {'leased', now + ttl}
"""

# KEYS: copy leases. ARGV: target, lease id. Returns 1 if the lease was held.
_RELEASE_COPY_LEASE = r"""
return redis.call('ZREM', KEYS[1], ARGV[2] .. ':' .. ARGV[1])
"""

# The copy leases that hold now. KEYS: copy leases.
# Returns a flat list {target, ms left, ...}.
_COPY_LEASES = r"""
local result = {}
for target, left in pairs(copy_leases(KEYS[1], redis_now_ms())) do
  result[#result + 1] = target
  result[#result + 1] = left
end
return result
"""

# Stop tracking a repository. KEYS: repo, repos, version, changes.
# ARGV: path, maxlen. Returns {removed (0/1), version}.
_REMOVE_REPOSITORY = r"""
local existed = redis.call('DEL', KEYS[1]) + redis.call('SREM', KEYS[2], ARGV[1])
if existed == 0 then return {0, 0} end
local version = publish_change(KEYS[3], KEYS[4], KEYS[1], ARGV[1], ARGV[2])
return {1, version}
"""

# Compare-and-set of the primary. A new primary with a copy running into it
# (an unexpired copy lease) is refused: the copy could overwrite the writes
# it takes as primary.
# KEYS: repo, version, changes, copy leases.
# ARGV: path, expected ('' for any), new primary, maxlen, up to date ('1':
# only if the new primary is at the repository's generation, else '').
# Returns {status, primary, version, state}; status is 'ok', 'unchanged',
# 'conflict' (primary is the current one), 'behind', 'busy' (a copy into
# the new primary is running), 'untracked' or 'not-assigned'.
_SET_PRIMARY = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'untracked', '', 0, ''} end
local current = redis.call('HGET', KEYS[1], 'primary')
if ARGV[2] ~= '' and current ~= ARGV[2] then return {'conflict', current, 0, ''} end
if current == ARGV[3] then return {'unchanged', current, 0, ''} end
local assigned = cjson.decode(redis.call('HGET', KEYS[1], 'assigned'))
local found = false
for _, name in ipairs(assigned) do if name == ARGV[3] then found = true end end
if not found then return {'not-assigned', current, 0, ''} end
if ARGV[5] == '1' then
  local have = tonumber(redis.call('HGET', KEYS[1], 'g:' .. ARGV[3]) or '-1')
  if have < tonumber(redis.call('HGET', KEYS[1], 'generation')) then
    return {'behind', current, 0, ''}
  end
end
if copy_leases(KEYS[4], redis_now_ms())[ARGV[3]] then return {'busy', current, 0, ''} end
redis.call('HSET', KEYS[1], 'primary', ARGV[3])
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], ARGV[1], ARGV[4])
return {'ok', ARGV[3], version, state}
"""

# Failover of one repository: keep the current primary if it is a candidate
# and up to date, else make the first up-to-date candidate without a copy
# running into it (copy lease) primary.
# KEYS: repo, version, changes, copy leases. ARGV: path, maxlen,
# candidate... (healthy nodes in order of preference).
# Returns {status, primary, version, state}; status 'ok', 'unchanged',
# 'none' (no up-to-date candidate), 'busy' (every up-to-date candidate is
# being copied into) or 'untracked'.
_ELECT_PRIMARY = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'untracked', '', 0, ''} end
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation'))
local current = redis.call('HGET', KEYS[1], 'primary')
local leased = copy_leases(KEYS[4], redis_now_ms())
local chosen, busy = nil, false
for i = 3, #ARGV do
  local g = redis.call('HGET', KEYS[1], 'g:' .. ARGV[i])
  if g and tonumber(g) == generation then
    if ARGV[i] == current then return {'unchanged', current, 0, ''} end
    if leased[ARGV[i]] then
      busy = true
    elseif chosen == nil then
      chosen = ARGV[i]
    end
  end
end
if chosen == nil and busy then return {'busy', current, 0, ''} end
if chosen == nil then return {'none', current, 0, ''} end
redis.call('HSET', KEYS[1], 'primary', chosen)
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], ARGV[1], ARGV[2])
return {'ok', chosen, version, state}
"""

# KEYS: repo, version, changes. ARGV: path, assigned (canonical JSON), maxlen.
# Returns {changed (-1 untracked, 0, 1), version, state}.
_SET_ASSIGNED = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, ''} end
if redis.call('HGET', KEYS[1], 'assigned') == ARGV[2] then return {0, 0, ''} end
redis.call('HSET', KEYS[1], 'assigned', ARGV[2])
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], ARGV[1], ARGV[3])
return {1, version, state}
"""

# Trim an event stream up to the lowest id that some group still needs: its
# lowest pending id, or the entry after its last delivered one. A stream
# without groups is not trimmed (nobody acknowledged anything yet).
# KEYS: stream. Returns the number of entries removed.
_TRIM_ACKNOWLEDGED = r"""
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local min_ms, min_seq = nil, nil
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local ms, seq
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    ms, seq = parse_id(summary[2])
  else
    ms, seq = parse_id(info['last-delivered-id'])
    seq = seq + 1
  end
  if min_ms == nil or ms < min_ms or (ms == min_ms and seq < min_seq) then
    min_ms, min_seq = ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', min_ms, min_seq))
"""


# Claim the verification of the replica of one repository on one node: due
# (its score, the time of its last verification, is older than the interval,
# in Redis time), not claimed by another worker (or that claim expired), and
# a replica the state believes in (tracked, assigned, with a generation).
# A replica with a copy running into it (a copy lease) is left for later: a
# repository being created by a copy does not exist until the copy renames
# it into place, and the copy's own outcome says what the replica holds.
#
# The claim remembers what the verdict must find unchanged: the replica's
# generation, the repository's created_at and the replica's score (a
# `praefect verify` mark since the claim changes it).
#
# KEYS: repo, due, claims, copy leases. ARGV: path, node, token, lease ms,
# interval ms.
# Returns {status, generation, created_at}; status 'claimed', 'held'
# (another worker's unexpired claim), 'not-due', 'untracked', 'no-replica'
# (the member is dropped from the due set in these two cases) or 'copying'.
_CLAIM_VERIFICATION = r"""
local path, node, token = ARGV[1], ARGV[2], ARGV[3]
local now = redis_now_ms()
local score = redis.call('ZSCORE', KEYS[2], path)
if not score or tonumber(score) > now - tonumber(ARGV[5]) then return {'not-due', '', ''} end
local held = redis.call('HGET', KEYS[3], path)
if held then
  local ok, claim = pcall(cjson.decode, held)
  if ok and type(claim) == 'table' and tonumber(claim.expires) and tonumber(claim.expires) > now then
    return {'held', '', ''}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], path)
  redis.call('HDEL', KEYS[3], path)
  return {'untracked', '', ''}
end
local generation = redis.call('HGET', KEYS[1], 'g:' .. node)
local assigned = false
for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'assigned') or '[]')) do
  if name == node then assigned = true end
end
if not generation or not assigned then
  redis.call('ZREM', KEYS[2], path)
  redis.call('HDEL', KEYS[3], path)
  return {'no-replica', '', ''}
end
if copy_leases(KEYS[4], now)[node] then return {'copying', '', ''} end
local created = redis.call('HGET', KEYS[1], 'created_at') or ''
redis.call('HSET', KEYS[3], path, cjson.encode({
  token = token, expires = string.format('%d', now + tonumber(ARGV[4])),
  generation = generation, created = created, score = score}))
return {'claimed', generation, created}
"""

# Record what the node said about a claimed replica, if the claim is still
# ours and the answer still means something:
# - the repository was deleted meanwhile: the replica leaves the due set
#   ('untracked'); created again (another created_at): no verdict
#   ('recreated'), it is checked again;
# - exists: the replica's score becomes now ('verified'), unless a
#   `praefect verify` mark came after the claim ('marked': the answer may
#   predate what the operator wants checked, so the mark stays);
# - missing: only if the replica still has the generation it had at the
#   claim (a copy or a write that raised it since may have created the
#   repository after the node answered: 'changed'), no copy is running
#   into it ('copying') and no write to it is in flight (an open intent of
#   a mutator forwarded to it, a RemoveRepository for instance, whose
#   record has not happened yet: 'in-flight'). Then its generation is dropped (no reads, no
#   elections), it leaves the due set (it is added back once repaired), and
#   one replication event repairs it from the replica with the highest
#   generation, the primary first on ties ('missing'). A primary gets no
#   event, nothing is ever copied into a primary: 'missing-primary' (the
#   caller moves the primary away, see _REPLACE_MISSING_PRIMARY). No other
#   replica with a generation: 'missing-no-source'.
# A replica whose generation was dropped meanwhile, or that is no longer
# assigned, leaves the due set ('outdated'). The claim is released in every case but 'lost' (the claim
# expired and another worker holds it now).
#
# KEYS: repo, version, changes, due, claims, copy leases, events(node),
# intents.
# ARGV: path, node, token, verdict ('exists' or 'missing'), maxlen, virtual
# storage, trace (JSON).
# Returns {status, verified at ms, version, state, repair source, its
# generation (-1: none)}.
_RECORD_VERIFICATION = r"""
local path, node, token, verdict = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local held = redis.call('HGET', KEYS[5], path)
local claim = nil
if held then
  local ok, decoded = pcall(cjson.decode, held)
  if ok and type(decoded) == 'table' then claim = decoded end
end
if claim == nil or claim.token ~= token then return {'lost', 0, 0, '', '', -1} end
redis.call('HDEL', KEYS[5], path)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], path)
  return {'untracked', 0, 0, '', '', -1}
end
if (redis.call('HGET', KEYS[1], 'created_at') or '') ~= claim.created then
  return {'recreated', 0, 0, '', '', -1}
end
local generation = redis.call('HGET', KEYS[1], 'g:' .. node)
local assigned = false
for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'assigned') or '[]')) do
  if name == node then assigned = true end
end
if not generation or not assigned then
  redis.call('ZREM', KEYS[4], path)
  return {'outdated', 0, 0, '', '', -1}
end
local now = redis_now_ms()
if verdict == 'exists' then
  local score = redis.call('ZSCORE', KEYS[4], path)
  if score and score ~= claim.score then return {'marked', 0, 0, '', '', -1} end
  redis.call('ZADD', KEYS[4], now, path)
  return {'verified', now, 0, '', '', -1}
end
if generation ~= claim.generation then return {'changed', 0, 0, '', '', -1} end
if copy_leases(KEYS[6], now)[node] then return {'copying', 0, 0, '', '', -1} end
for _, text in ipairs(redis.call('HVALS', KEYS[8])) do
  local ok, intent = pcall(cjson.decode, text)
  if ok and type(intent) == 'table' and intent.path == path and intent.node == node then
    return {'in-flight', 0, 0, '', '', -1}
  end
end
redis.call('HDEL', KEYS[1], 'g:' .. node)
redis.call('ZREM', KEYS[4], path)
local primary = redis.call('HGET', KEYS[1], 'primary') or ''
local source, source_generation = '', -1
if primary ~= node then
  local order = {primary}
  for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'assigned') or '[]')) do
    order[#order + 1] = name
  end
  for _, name in ipairs(order) do
    if name ~= '' and name ~= node then
      local g = tonumber(redis.call('HGET', KEYS[1], 'g:' .. name) or '-1')
      if g > source_generation then source, source_generation = name, g end
    end
  end
end
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], path, ARGV[5])
if primary == node then return {'missing-primary', 0, version, state, '', -1} end
if source == '' then return {'missing-no-source', 0, version, state, '', -1} end
redis.call('XADD', KEYS[7], '*',
  'vs', ARGV[6], 'path', path, 'change', 'update', 'source', source, 'target', node,
  'generation', source_generation, 'sequence', version,
  'created_at', string.format('%.3f', now / 1000), 'trace', ARGV[7],
  'attempt', 0, 'not_before', 0)
return {'missing', 0, version, state, source, source_generation}
"""

# Give up a claim without a verdict (the node did not answer): only our own.
# KEYS: claims. ARGV: path, token. Returns 1 if it was ours.
_RELEASE_VERIFICATION = r"""
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then return 0 end
local ok, claim = pcall(cjson.decode, held)
if ok and type(claim) == 'table' and claim.token == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# A primary whose replica verification found missing (it has no generation)
# hands the role to the candidate that has every acknowledged write: assigned,
# a generation of at least 'acked' (the failover plugin's field; without it,
# the repository's generation) and no copy running into it (copy lease); the
# highest generation wins, the earlier candidate on ties. The same call
# queues the repair of the former primary from the new one.
#
# Only while the primary is still `expected` and still has no generation (an
# operator's accept-dataloss may have made it authoritative again).
#
# KEYS: repo, version, changes, copy leases, events(expected).
# ARGV: path, maxlen, virtual storage, expected primary, trace (JSON),
# candidate... (nodes that answer, in order of preference).
# Returns {status, primary, its generation, repository generation, version,
# state}; status 'ok', 'none' (no candidate has every acknowledged write),
# 'busy' (only candidates being copied into have), 'conflict' (the primary
# is not `expected`), 'not-missing' or 'untracked'.
_REPLACE_MISSING_PRIMARY = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'untracked', '', -1, -1, 0, ''} end
local path, expected = ARGV[1], ARGV[4]
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation'))
local current = redis.call('HGET', KEYS[1], 'primary') or ''
if current ~= expected then return {'conflict', current, -1, generation, 0, ''} end
if redis.call('HGET', KEYS[1], 'g:' .. current) then
  return {'not-missing', current, -1, generation, 0, ''}
end
local acked = tonumber(redis.call('HGET', KEYS[1], 'acked') or generation)
if acked > generation then acked = generation end
local assigned = {}
for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'assigned') or '[]')) do
  assigned[name] = true
end
local now = redis_now_ms()
local leased = copy_leases(KEYS[4], now)
local chosen, chosen_generation, busy = nil, -1, false
for i = 6, #ARGV do
  local name = ARGV[i]
  local g = tonumber(redis.call('HGET', KEYS[1], 'g:' .. name) or '-1')
  if name ~= current and assigned[name] and g >= 0 and g >= acked then
    if leased[name] then
      busy = true
    elseif g > chosen_generation then
      chosen, chosen_generation = name, g
    end
  end
end
if chosen == nil and busy then return {'busy', current, -1, generation, 0, ''} end
if chosen == nil then return {'none', current, -1, generation, 0, ''} end
redis.call('HSET', KEYS[1], 'primary', chosen)
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], path, ARGV[2])
redis.call('XADD', KEYS[5], '*',
  'vs', ARGV[3], 'path', path, 'change', 'update', 'source', chosen, 'target', current,
  'generation', chosen_generation, 'sequence', version,
  'created_at', string.format('%.3f', now / 1000), 'trace', ARGV[5],
  'attempt', 0, 'not_before', 0)
return {'ok', chosen, chosen_generation, generation, version, state}
"""


@dataclass(frozen=True, slots=True)
class Scripts:
    """The scripts registered on one client (each keeps its SHA1 for EVALSHA)."""

    record_mutation: AsyncScript
    set_replica_generation: AsyncScript
    raise_after_copy: AsyncScript
    take_copy_lease: AsyncScript
    release_copy_lease: AsyncScript
    copy_leases: AsyncScript
    remove_repository: AsyncScript
    set_primary: AsyncScript
    elect_primary: AsyncScript
    set_assigned: AsyncScript
    trim_acknowledged: AsyncScript
    claim_verification: AsyncScript
    record_verification: AsyncScript
    release_verification: AsyncScript
    replace_missing_primary: AsyncScript

    @classmethod
    def register(cls, client: aioredis.Redis) -> Scripts:
        return cls(
            record_mutation=client.register_script(_PRELUDE + _RECORD_MUTATION),
            set_replica_generation=client.register_script(_PRELUDE + _SET_REPLICA_GENERATION),
            raise_after_copy=client.register_script(_PRELUDE + _RAISE_AFTER_COPY),
            take_copy_lease=client.register_script(_PRELUDE + _TAKE_COPY_LEASE),
            release_copy_lease=client.register_script(_RELEASE_COPY_LEASE),
            copy_leases=client.register_script(_PRELUDE + _COPY_LEASES),
            remove_repository=client.register_script(_PRELUDE + _REMOVE_REPOSITORY),
            set_primary=client.register_script(_PRELUDE + _SET_PRIMARY),
            elect_primary=client.register_script(_PRELUDE + _ELECT_PRIMARY),
            set_assigned=client.register_script(_PRELUDE + _SET_ASSIGNED),
            trim_acknowledged=client.register_script(_TRIM_ACKNOWLEDGED),
            claim_verification=client.register_script(_PRELUDE + _CLAIM_VERIFICATION),
            record_verification=client.register_script(_PRELUDE + _RECORD_VERIFICATION),
            release_verification=client.register_script(_RELEASE_VERIFICATION),
            replace_missing_primary=client.register_script(_PRELUDE + _REPLACE_MISSING_PRIMARY),
        )
