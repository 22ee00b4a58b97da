-- ARGV: now_ms, frame_tail, channel, closed_ttl, maxlen
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
redis.call('HSET', KEYS[1], 'status', 'closed', 'closed_at', ARGV[1], 'updated_at', ARGV[1])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local frame = '{"seq":' .. seq .. ',' .. ARGV[2]
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'seq', seq, 'origin', '-', 'msg', '', 'frame', frame)
redis.call('PUBLISH', ARGV[3], 'c|-|' .. seq .. '||' .. ARGV[1] .. '|' .. frame)
redis.call('DEL', KEYS[3], KEYS[4], KEYS[6], KEYS[7])
touch(ARGV[4])
return {'ok', seq}
