-- ARGV: now_ms, channel, closed_ttl, maxlen, then the room_closed SequencedEnvelope.script_args()
-- (ARGV[5..11]).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
redis.call('HSET', KEYS[1], 'status', 'closed', 'closed_at', ARGV[1], 'updated_at', ARGV[1])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
record_sequenced(seq, 5, ARGV[2], ARGV[4])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[6], KEYS[7])
touch(ARGV[3])
return {'ok', seq}
