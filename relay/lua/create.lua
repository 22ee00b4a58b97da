-- ARGV: user_id, member_json, now_ms, ttl, title, language, content (RELAY_WELCOME_TEXT)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'open', 'created_at', ARGV[3], 'created_by', ARGV[1],
  'seq', 0, 'content', ARGV[7], 'title', ARGV[5], 'language', ARGV[6], 'updated_at', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
touch(ARGV[4])
return 1
