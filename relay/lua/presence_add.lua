-- ARGV: entry, expires_ms, now_ms, user_id, channel, joined_envelope, ttl, max_per_user, max_per_room,
-- then protocol.sweep_templates (ARGV[10..13], for sweep).
-- Returns 1 (user arrived), 0 (refreshed / another tab), -1 room not open, -2 too many connections of
-- this user, -3 too many connections in the room, -4 no longer a member.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 then return -4 end
sweep(ARGV[3], ARGV[5], 10)
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  local entries = redis.call('ZRANGE', KEYS[4], 0, -1)
  local mine = 0
  for _, entry in ipairs(entries) do
    if user_of(entry) == ARGV[4] then mine = mine + 1 end
  end
  if mine >= tonumber(ARGV[8]) then return -2 end
  if #entries >= tonumber(ARGV[9]) then return -3 end
end
local was_present = user_present(ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
if not was_present then redis.call(PUBLISH, ARGV[5], ARGV[6]) end
touch(ARGV[7])
if was_present then return 0 end
return 1
