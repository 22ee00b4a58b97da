-- Publish a volatile Yjs message (awareness, a query for it) to the room, if the room is open.
-- KEYS: [1] room   ARGV: channel, envelope
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call(PUBLISH, ARGV[1], ARGV[2])
return 1
