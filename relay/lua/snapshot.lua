-- ARGV: now_ms, after_seq|''. One atomic read of everything a connecting socket needs; last, 1 when the
-- room's Yjs document has updates its text does not show yet (yjs_store.YjsStore.snapshot folds them).
local room = redis.call('HGETALL', KEYS[1])
if #room == 0 then return {'missing'} end
local missed = 'none'
if ARGV[2] ~= '' then missed = events_after(tonumber(ARGV[2])) end
if type(missed) == 'string' then missed = {missed} else table.insert(missed, 1, 'events') end
local behind = 0
local yseq = redis.call('HGET', KEYS[11], 'seq')
if yseq and tonumber(yseq) > tonumber(redis.call('HGET', KEYS[1], 'content_yseq') or '-1') then behind = 1 end
return {'ok', room, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
  redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[1], '+inf'), missed, behind}
