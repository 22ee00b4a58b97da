-- ARGV: user_id, member_json, ttl, max_members, role, max_candidates
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
if redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 1 then return {'removed'} end
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return {'existing', existing} end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return {'full'} end
-- Candidates are counted (one per room by default); interviewers are not.
if ARGV[5] == 'candidate' then
  local candidates = 0
  for _, raw in ipairs(redis.call('HVALS', KEYS[2])) do
    if cjson.decode(raw)['role'] == 'candidate' then candidates = candidates + 1 end
  end
  if candidates >= tonumber(ARGV[6]) then return {'candidate_taken'} end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
touch(ARGV[3])
return {'joined', ARGV[2]}
