-- ARGV: user_id, kind ('focus' | 'key'), record_json | '', alert_envelope | '', channel, max_records, ttl
-- One accepted candidate monitoring frame: counted, kept when it is an incident or a suspicious key press
-- (capped lists, newest first), announced to the room's interviewers. Only the room's candidates may
-- send them: the role is read from the membership record here, in the same step as the write.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'open' then return 'closed' end
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then
  if redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 1 then return 'removed' end
  return 'not_member'
end
if cjson.decode(member)['role'] ~= 'candidate' then return 'not_candidate' end
local cap = tonumber(ARGV[6])
if ARGV[2] == 'focus' then
  redis.call('HINCRBY', KEYS[8], 'focus_lost', 1)
  redis.call('LPUSH', KEYS[9], ARGV[3])
  redis.call('LTRIM', KEYS[9], 0, cap - 1)
else
  redis.call('HINCRBY', KEYS[8], 'keystrokes', 1)
  if ARGV[3] ~= '' then
    redis.call('HINCRBY', KEYS[8], 'suspicious_keystrokes', 1)
    redis.call('LPUSH', KEYS[10], ARGV[3])
    redis.call('LTRIM', KEYS[10], 0, cap - 1)
  end
end
if ARGV[4] ~= '' then redis.call(PUBLISH, ARGV[5], ARGV[4]) end
touch(ARGV[7])
return 'ok'
