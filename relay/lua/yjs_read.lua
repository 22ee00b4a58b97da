-- The room's document as stored: snapshot, the sequence number it covers, the last sequence number,
-- the room's status, whether a Yjs client ever edited it (1/0), and the first `count` updates after the
-- snapshot as {id, update, ...}, after the last Yjs author's user id and name (yjs_append records
-- them). yjs_store reads the rest of a long tail with XRANGE in chunks.
-- KEYS: [1] room, [2] members, [3] ydoc, [4] yupdates, [5] presence (unused)
-- ARGV: count
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {'unseeded', redis.call('HGET', KEYS[1], 'content') or ''}
end
local doc = redis.call('HMGET', KEYS[3], 'snapshot', 'snapshot_seq', 'seq', 'yjs_edits', 'author',
  'author_name')
local folded = tonumber(doc[2] or '0')
local out = {'ok', doc[1] or '', folded, tonumber(doc[3] or '0'), status, doc[4] and 1 or 0,
  doc[5] or '', doc[6] or ''}
for _, entry in ipairs(redis.call('XRANGE', KEYS[4], (folded + 1) .. '-0', '+', 'COUNT', ARGV[1])) do
  local fields = entry[2]
  local update = ''
  for j = 1, #fields, 2 do if fields[j] == 'u' then update = fields[j + 1] end end
  table.insert(out, entry[1]); table.insert(out, update)
end
return out
