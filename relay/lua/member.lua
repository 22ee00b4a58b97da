-- ARGV: user_id. Status and membership in one read, for the WebSocket handshake.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then
  if redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 1 then return {'removed'} end
  return {'not_member'}
end
return {'ok', member}
