-- Take the room's compaction lock if free; answers the snapshot and the numbers to fold from, or
-- false when another compactor holds it (or the document does not exist).
-- KEYS: [1] ydoc, [2] ylock   ARGV: lock_token, lock_ms
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local doc = redis.call('HMGET', KEYS[1], 'snapshot', 'snapshot_seq', 'seq')
return {doc[1] or '', tonumber(doc[2] or '0'), tonumber(doc[3] or '0')}
