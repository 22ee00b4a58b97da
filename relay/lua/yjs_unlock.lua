-- Release the compaction lock only if this compactor still holds it (it may have expired and moved on).
-- KEYS: [1] ylock   ARGV: lock_token
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
