-- Prepended to every script of this directory (rooms.py loads them): the helpers they share.
-- KEYS, the same for every script (keys.RoomKeys.all): [1] room, [2] members, [3] cursors, [4] presence,
-- [5] events, [6] acks, [7] removed, [8] monitoring (counts), [9] incidents, [10] suspicious,
-- [11] ydoc, [12] yupdates.
-- PUBLISH, the publish command, is defined in front of this file by rooms.py: 'PUBLISH' for one Redis,
-- 'SPUBLISH' on a Redis Cluster (sharded pub/sub, delivered by the room's shard only).
local function touch(ttl)
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
-- touch() for the hot path: a TTL refresh costs one EXPIRE per key, so refresh them all only when the
-- room's TTL fell by more than a minute (a hundredth of a shorter TTL). Keys the caller may have just
-- created (their KEYS indexes) get a TTL at once, only if they have none (NX).
local function keep_alive(ttl, ...)
  ttl = tonumber(ttl)
  if redis.call('TTL', KEYS[1]) < ttl - math.min(60, ttl / 100) then
    touch(ttl)
    return
  end
  for _, index in ipairs({...}) do redis.call('EXPIRE', KEYS[index], ttl, 'NX') end
end
local function user_of(entry)
  return string.match(entry, '^(.*)\t')
end
local function user_present(uid)
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    if user_of(entry) == uid then return true end
  end
  return false
end
-- Drop presence entries whose replica stopped refreshing them (it died) and tell the room: each dead
-- connection (its Yjs awareness is cleared) and each user with no connection left (member_left).
-- ARGV[t..t+3]: protocol.sweep_templates: the member_left envelope around its user id, then the
-- connection-gone envelope around its connection id.
local function sweep(now, channel, t)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  if #expired == 0 then return end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  local left_head, left_tail = ARGV[t], ARGV[t + 1]
  local gone = {}
  for _, entry in ipairs(expired) do
    gone[user_of(entry)] = true
    redis.call(PUBLISH, channel, ARGV[t + 2] .. string.match(entry, '\t(.*)$') .. ARGV[t + 3])
  end
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do gone[user_of(entry)] = nil end
  for uid, _ in pairs(gone) do
    redis.call(PUBLISH, channel, left_head .. cjson.encode(uid) .. left_tail)
  end
end
-- Keep a durable event numbered `seq` in the stream and publish it. ARGV[first..first+6] are
-- protocol.SequencedEnvelope.script_args(): kind, origin, msg_id, envelope_head, envelope_middle,
-- frame_head, frame_tail. The stream entry records its kind: events_after hands it back.
local function record_sequenced(seq, first, channel, maxlen)
  local kind, origin, msg = ARGV[first], ARGV[first + 1], ARGV[first + 2]
  local frame = ARGV[first + 5] .. seq .. ARGV[first + 6]
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*',
    'seq', seq, 'origin', origin, 'msg', msg, 'frame', frame, 'kind', kind)
  redis.call(PUBLISH, channel, ARGV[first + 3] .. seq .. ARGV[first + 4] .. frame)
end
-- Durable events after `after`, oldest first, as {seq, origin, msg, frame, kind, ...} (kind '' for an
-- entry written before entries recorded it);
-- 'ahead' when the room never reached `after`, 'gone' when history no longer covers the gap.
local function events_after(after)
  local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  if after > seq then return 'ahead' end
  if after == seq then return {} end
  local wanted = seq - after
  local entries = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', wanted)
  if #entries < wanted then return 'gone' end
  local out = {}
  for i = #entries, 1, -1 do
    local fields = entries[i][2]
    local row = {}
    for j = 1, #fields, 2 do row[fields[j]] = fields[j + 1] end
    table.insert(out, row['seq']); table.insert(out, row['origin'])
    table.insert(out, row['msg']); table.insert(out, row['frame']); table.insert(out, row['kind'] or '')
  end
  if tonumber(out[1]) ~= after + 1 then return 'gone' end
  return out
end
