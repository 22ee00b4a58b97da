-- ARGV: user_id, content, cursor_json|'', frame_tail, origin, msg_id|'', now_ms, ttl, maxlen, minid, channel
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
-- A client that did not see its ack resends with the same client_msg_id: answer, don't apply twice.
if ARGV[6] ~= '' then
  local last = redis.call('HGET', KEYS[6], ARGV[1])
  if last then
    local msg, seq = string.match(last, '^(.*) (%d+)$')
    if msg == ARGV[6] then return {'duplicate', tonumber(seq)} end
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'content', ARGV[2], 'updated_at', ARGV[7])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[6], ARGV[1], ARGV[6] .. ' ' .. seq) end
local frame = '{"seq":' .. seq .. ',' .. ARGV[4]
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*',
  'seq', seq, 'origin', ARGV[5], 'msg', ARGV[6], 'frame', frame)
redis.call('XTRIM', KEYS[5], 'MINID', '~', ARGV[10])
local envelope = 'e|' .. ARGV[5] .. '|' .. seq .. '|' .. ARGV[6] .. '|' .. ARGV[7] .. '|' .. frame
redis.call('PUBLISH', ARGV[11], envelope)
touch(ARGV[8])
return {'ok', seq}
