-- ARGV: after_seq
local missed = events_after(tonumber(ARGV[1]))
if type(missed) == 'string' then return {missed} end
table.insert(missed, 1, 'events')
return missed
