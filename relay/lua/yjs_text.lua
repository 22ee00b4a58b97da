-- The room's text as of Yjs update `yseq`, for whole-document clients: stored as the room's content and,
-- when it changed, sent as one numbered editor_update (coalescing every Yjs update since the last one).
-- Skipped when the content already reflects `yseq` or later (another replica, or an edit, was first).
-- ARGV: content, yseq, now_ms, ttl, maxlen, minid, channel, then SequencedEnvelope.script_args() (8..14)
-- A closed room's text is still brought up to date (what GET /api/room shows), with no event: nobody
-- is connected to receive one.
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'open' and status ~= 'closed' then return {'skip'} end
local at = tonumber(redis.call('HGET', KEYS[1], 'content_yseq') or '-1')
if at >= tonumber(ARGV[2]) then return {'skip'} end
if status == 'closed' then
  redis.call('HSET', KEYS[1], 'content', ARGV[1], 'content_yseq', ARGV[2])
  return {'same'}
end
if (redis.call('HGET', KEYS[1], 'content') or '') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'content_yseq', ARGV[2])
  return {'same'}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'content', ARGV[1], 'content_yseq', ARGV[2], 'updated_at', ARGV[3])
record_sequenced(seq, 8, ARGV[7], ARGV[5])
redis.call('XTRIM', KEYS[5], 'MINID', '~', ARGV[6])
keep_alive(ARGV[4], 5)
return {'ok', seq}
