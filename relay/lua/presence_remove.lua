-- ARGV: entry, now_ms, user_id, channel, left_envelope, protocol.sweep_templates (6..9, for sweep)
local removed = redis.call('ZREM', KEYS[4], ARGV[1])
sweep(ARGV[2], ARGV[4], 6)
if removed == 1 and not user_present(ARGV[3]) then
  redis.call(PUBLISH, ARGV[4], ARGV[5])
  redis.call('HDEL', KEYS[3], ARGV[3])
  return 1
end
return 0
