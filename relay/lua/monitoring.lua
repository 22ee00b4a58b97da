-- ARGV: user_id. A room's monitoring data and the caller's membership, in one read. Works on closed
-- rooms too (their member records are kept until the room expires), so an interviewer can still read it.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local member = redis.call('HGET', KEYS[2], ARGV[1]) or ''
return {'ok', member, redis.call('HGETALL', KEYS[8]), redis.call('LRANGE', KEYS[9], 0, -1),
  redis.call('LRANGE', KEYS[10], 0, -1)}
