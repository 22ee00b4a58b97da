-- Start a room's Yjs document from its whole-document text (a room from before Yjs, or one whose
-- document keys expired while the room lived). Only once: a second replica racing loses and reloads.
-- KEYS: [1] room, [2] members, [3] ydoc, [4] yupdates, [5] presence (unused)
-- ARGV: snapshot, the content it was made from, ttl
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if (redis.call('HGET', KEYS[1], 'content') or '') ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[3], 'snapshot', ARGV[1], 'snapshot_seq', 0, 'seq', 0)
redis.call('HSET', KEYS[1], 'content_yseq', 0)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
