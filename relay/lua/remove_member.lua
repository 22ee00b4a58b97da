-- ARGV: user_id, removed_envelope, channel, ttl. The user's sockets are told and closed by their replicas.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'open' then return 'closed' end
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 'not_found' end
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if user_of(entry) == ARGV[1] then redis.call('ZREM', KEYS[4], entry) end
end
redis.call(PUBLISH, ARGV[3], ARGV[2])
touch(ARGV[4])
return 'ok'
