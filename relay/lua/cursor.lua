-- ARGV: user_id, cursor_json, envelope, channel, ttl. Volatile: no sequence number, no history.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
-- A user's first cursor may create the hash: it then expires with the room (NX: a TTL only if none).
if redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[5], 'NX') end
redis.call(PUBLISH, ARGV[4], ARGV[3])
return 1
