"""The Lua scripts of health votes, elections and write acknowledgements.

They work on the keys the replication plugin owns (the repository hash and
its copy leases, see :mod:`praefect.plugins.replication.state`) plus the
health keys of :mod:`praefect.plugins.failover.keys`, all under one virtual
storage's hash tag. A script that changes a repository publishes the change exactly like
the replication scripts do (their ``publish_change``), so every router's
state cache follows it.

The repository hash gets one field of ours, ``acked``: the highest
generation whose write a client was told succeeded. Elections may promote a
replica that is behind the repository's generation only by writes no client
got an OK for (see :mod:`praefect.plugins.failover.election`). Without the
field (repositories written by routers without this plugin) every recorded
write counts as acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from praefect.plugins.replication.scripts import _PRELUDE as PUBLISH_PRELUDE

__all__ = ["FailoverScripts"]

# Record this router's vote and count the votes of every router heard from
# within the window; change the shared view of a node when the majority's
# verdict differs from it. The time is Redis's, so routers' clocks do not
# matter. Votes older than the window are deleted here: a vote lives for
# the window (its TTL), and the whole hash expires when no router votes.
#
# KEYS: votes, view. ARGV: router id, vote (JSON {node: 1|0}), window ms.
# Returns JSON {"view": {node: "up"|"down"}, "changes": [[node, state, epoch]],
# "voters": n, "down": {node: votes}, "now": ms}; "view" and "changes" cover
# the nodes of the vote.
_TALLY = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local mine = cjson.decode(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({at = now, nodes = mine}))
local up, down, voters = {}, {}, 0
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local ok, vote = pcall(cjson.decode, flat[i + 1])
  if not ok or type(vote) ~= 'table' or type(vote.at) ~= 'number'
     or type(vote.nodes) ~= 'table' or now - vote.at > window then
    redis.call('HDEL', KEYS[1], flat[i])
  else
    voters = voters + 1
    for node, healthy in pairs(vote.nodes) do
      if healthy == 1 then
        up[node] = (up[node] or 0) + 1
      else
        down[node] = (down[node] or 0) + 1
      end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], window * 2)
local view, changes, down_votes = {}, {}, {}
for node, _ in pairs(mine) do
  local d, u = down[node] or 0, up[node] or 0
  down_votes[node] = d
  -- down only when more routers say down than up: a tie keeps the node up
  local state = 'up'
  if d > u then state = 'down' end
  local stored = redis.call('HGET', KEYS[2], node)
  if not stored then stored = 'up' end
  if stored ~= state then
    redis.call('HSET', KEYS[2], node, state, 'since:' .. node, now)
    local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
    changes[#changes + 1] = {node, state, epoch}
  end
  view[node] = state
end
return cjson.encode({view = view, changes = changes, voters = voters, down = down_votes, now = now})
"""

# Elect a primary among candidates (healthy nodes, in order of preference).
# A candidate qualifies when it is assigned and its generation is at least
# the acknowledged one ('acked', default: the repository's generation). The
# current primary stays when it qualifies; otherwise the qualifying
# candidate with the highest generation wins (ties: the earlier candidate).
#
# A qualifying candidate with a copy running into it (an unexpired copy
# lease, see the replication plugin's _TAKE_COPY_LEASE) is skipped: the copy
# overwrites and prunes its refs, and would undo writes it took as primary.
# When only such candidates qualify the answer is 'busy', not 'none': the
# repository is not read-only, its election must wait until a copy ends.
#
# KEYS: repo, version, changes, copy leases. ARGV: path, changes maxlen,
# expected primary ('' for any), candidate...
# Returns {status, primary, version, state, primary's generation, repository
# generation, busy candidates (JSON list, '' unless 'busy'), ms until the
# last of their leases expires (0 unless 'busy')}; status is 'ok',
# 'unchanged', 'none' (no candidate qualifies), 'busy', 'conflict' (the
# primary is not the expected one) or 'untracked'.
_ELECT = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'untracked', '', 0, '', -1, -1, '', 0} end
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation'))
local acked = tonumber(redis.call('HGET', KEYS[1], 'acked') or generation)
if acked > generation then acked = generation end
local current = redis.call('HGET', KEYS[1], 'primary') or ''
if ARGV[3] ~= '' and current ~= ARGV[3] then
  return {'conflict', current, 0, '', -1, generation, '', 0}
end
local assigned = {}
for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'assigned') or '[]')) do
  assigned[name] = true
end
local leased = copy_leases(KEYS[4], redis_now_ms())
local chosen, chosen_generation = nil, -1
local busy, busy_for = {}, 0
for i = 4, #ARGV do
  local name = ARGV[i]
  local g = tonumber(redis.call('HGET', KEYS[1], 'g:' .. name) or '-1')
  if assigned[name] and g >= acked then
    if name == current then return {'unchanged', current, 0, '', g, generation, '', 0} end
    if leased[name] then
      busy[#busy + 1] = name
      if leased[name] > busy_for then busy_for = leased[name] end
    elseif g > chosen_generation then
      chosen, chosen_generation = name, g
    end
  end
end
if chosen == nil and #busy > 0 then
  return {'busy', current, 0, '', -1, generation, cjson.encode(busy), busy_for}
end
if chosen == nil then return {'none', current, 0, '', -1, generation, '', 0} end
redis.call('HSET', KEYS[1], 'primary', chosen)
local version, state = publish_change(KEYS[2], KEYS[3], KEYS[1], ARGV[1], ARGV[2])
return {'ok', chosen, version, state, chosen_generation, generation, '', 0}
"""

# A write is about to be acknowledged: raise 'acked' to its generation, but
# only while the node that took it is still the primary. After a failover
# the write is not acknowledged: the new primary may not have it.
#
# KEYS: repo. ARGV: primary that took the write, generation of the write.
# Returns {status, primary}: 'ok', 'moved' (another node is primary now) or
# 'untracked' (the repository was deleted: nothing to protect).
_ACKNOWLEDGE = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'untracked', ''} end
local current = redis.call('HGET', KEYS[1], 'primary') or ''
if current ~= ARGV[1] then return {'moved', current} end
local generation = tonumber(ARGV[2])
local acked = tonumber(redis.call('HGET', KEYS[1], 'acked') or '-1')
if generation > acked then redis.call('HSET', KEYS[1], 'acked', generation) end
return {'ok', current}
"""


@dataclass(frozen=True, slots=True)
class FailoverScripts:
    """The scripts registered on one client (EVALSHA, reloaded after NOSCRIPT)."""

    tally: AsyncScript
    elect: AsyncScript
    acknowledge: AsyncScript

    @classmethod
    def register(cls, client: aioredis.Redis) -> FailoverScripts:
        return cls(
            tally=client.register_script(_TALLY),
            elect=client.register_script(PUBLISH_PRELUDE + _ELECT),
            acknowledge=client.register_script(_ACKNOWLEDGE),
        )
