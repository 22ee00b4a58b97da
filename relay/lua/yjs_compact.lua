-- Replace the snapshot with one that folds every update up to `folded`, and trim exactly those from
-- the stream; only while this compactor still holds the room's lock. Updates after `folded` stay.
-- KEYS: [1] ydoc, [2] yupdates, [3] ylock
-- ARGV: lock_token, snapshot, folded
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'lost' end
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local current = tonumber(redis.call('HGET', KEYS[1], 'snapshot_seq') or '0')
if current >= tonumber(ARGV[3]) then return 'stale' end
redis.call('HSET', KEYS[1], 'snapshot', ARGV[2], 'snapshot_seq', ARGV[3])
redis.call('XTRIM', KEYS[2], 'MINID', (tonumber(ARGV[3]) + 1) .. '-0')
return 'ok'
