-- Updates first..last of the stream (at most `count`), as {id, update, ...}; also the document's
-- numbers, so a reader knows what it should have found, and the last Yjs author:
-- {snapshot_seq, seq, author, author_name, id, update, ...}.
-- KEYS: [1] ydoc, [2] yupdates   ARGV: first, last ('+' for all), count
local doc = redis.call('HMGET', KEYS[1], 'snapshot_seq', 'seq', 'author', 'author_name')
local out = {tonumber(doc[1] or '0'), tonumber(doc[2] or '0'), doc[3] or '', doc[4] or ''}
local last = ARGV[2]
if last ~= '+' then last = last .. '-0' end
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', last, 'COUNT', ARGV[3])) do
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if fields[j] == 'u' then table.insert(out, entry[1]); table.insert(out, fields[j + 1]) end
  end
end
return out
