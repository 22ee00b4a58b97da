-- Store one Yjs update and publish it: the next number of the room's Yjs sequence, the stream entry
-- with that number as its id, and the envelope on the room's channel, in one atomic step.
-- KEYS: [1] room, [2] members, [3] ydoc, [4] yupdates, [5] presence (yjs_store.YjsKeys.all)
-- ARGV: user_id, update, origin, ttl, channel, envelope_head, envelope_middle, user_name
--       (protocol.yjs_update_parts: the envelope is head .. seq .. middle .. update)
-- Returns {'ok', seq, updates after the snapshot, 1 when a whole-document client is connected}: only
-- then does the room's text need to follow now (yjs_store.TextMirror); otherwise it is brought up to
-- date when someone reads it (yjs_store.YjsStore.snapshot), from the author recorded here.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {'unseeded'} end
local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
-- A Yjs client edits this room: whole-document edits are merged from now on (yjs_store.edit_text).
redis.call('HSETNX', KEYS[3], 'yjs_edits', 1)
redis.call('HSET', KEYS[3], 'author', ARGV[1], 'author_name', ARGV[8])
redis.call('XADD', KEYS[4], seq .. '-0', 'u', ARGV[2], 'o', ARGV[3])
redis.call(PUBLISH, ARGV[5], ARGV[6] .. seq .. ARGV[7] .. ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[4])
local folded = tonumber(redis.call('HGET', KEYS[3], 'snapshot_seq') or '0')
-- Presence entries are "user_id\tconnection_id"; Yjs connection ids start with 'y' (yjs_ws.YJS_ID_PREFIX),
-- whole-document ones are hex.
local whole = 0
for _, entry in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  if string.match(entry, '\t([^\t])[^\t]*$') ~= 'y' then whole = 1; break end
end
return {'ok', seq, seq - folded, whole}
