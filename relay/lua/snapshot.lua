-- ARGV: now_ms, after_seq|''. One atomic read of everything a connecting socket needs.
local room = redis.call('HGETALL', KEYS[1])
if #room == 0 then return {'missing'} end
local missed = 'none'
if ARGV[2] ~= '' then missed = events_after(tonumber(ARGV[2])) end
if type(missed) == 'string' then missed = {missed} else table.insert(missed, 1, 'events') end
return {'ok', room, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
  redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[1], '+inf'), missed}
