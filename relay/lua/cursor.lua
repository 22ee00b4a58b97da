-- ARGV: user_id, cursor_json, envelope, channel. Volatile: no sequence number, no history.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call(PUBLISH, ARGV[4], ARGV[3])
return 1
