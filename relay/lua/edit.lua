-- ARGV: user_id, content, cursor_json|'', msg_id|'', now_ms, ttl, maxlen, minid, channel,
-- then the event's SequencedEnvelope.script_args() (ARGV[10..16]),
-- then the Yjs side (rooms.TextChange, '' when none): based_on, update, yjs_head, yjs_middle.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
-- A client that did not see its ack resends with the same client_msg_id: answer, don't apply twice.
if ARGV[4] ~= '' then
  local last = redis.call('HGET', KEYS[6], ARGV[1])
  if last then
    local msg, seq = string.match(last, '^(.*) (%d+)$')
    if msg == ARGV[4] then return {'duplicate', tonumber(seq)} end
  end
end
-- The shared document changed since the edit was merged against it: the caller merges again.
-- based_on -1: the room has no Yjs document (no Yjs client came yet), the text is stored verbatim; if
-- one was started meanwhile, the caller edits through it instead.
local yseq = nil
if ARGV[17] == '-1' then
  if redis.call('EXISTS', KEYS[11]) == 1 then return {'conflict'} end
elseif ARGV[17] ~= '' then
  yseq = tonumber(redis.call('HGET', KEYS[11], 'seq') or '-1')
  if yseq ~= tonumber(ARGV[17]) then return {'conflict'} end
  if ARGV[18] ~= '' then
    yseq = redis.call('HINCRBY', KEYS[11], 'seq', 1)
    redis.call('XADD', KEYS[12], yseq .. '-0', 'u', ARGV[18], 'o', ARGV[11])
    redis.call(PUBLISH, ARGV[9], ARGV[19] .. yseq .. ARGV[20] .. ARGV[18])
  end
  redis.call('HSET', KEYS[1], 'content_yseq', yseq)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'content', ARGV[2], 'updated_at', ARGV[5])
-- Keys this edit may have created (a new field can mean a new hash; seq 1 starts the stream): they
-- need a TTL now if keep_alive does not refresh everything.
local created = {}
if ARGV[3] ~= '' and redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) == 1 then table.insert(created, 3) end
if ARGV[4] ~= '' and redis.call('HSET', KEYS[6], ARGV[1], ARGV[4] .. ' ' .. seq) == 1 then
  table.insert(created, 6)
end
if seq == 1 then table.insert(created, 5) end
record_sequenced(seq, 10, ARGV[9], ARGV[7])
-- XADD trims by count on every event; the age bound can lag by 64 events.
if seq % 64 == 0 then redis.call('XTRIM', KEYS[5], 'MINID', '~', ARGV[8]) end
if yseq and ARGV[18] ~= '' then table.insert(created, 12) end
keep_alive(ARGV[6], unpack(created))
if yseq then
  return {'ok', seq, yseq - tonumber(redis.call('HGET', KEYS[11], 'snapshot_seq') or '0')}
end
return {'ok', seq, 0}
