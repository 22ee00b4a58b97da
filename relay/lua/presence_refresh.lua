-- ARGV: expires_ms, now_ms, channel, protocol.sweep_templates (4..7, for sweep), entry... Extends this replica's
-- live entries of one room in one call and sweeps the dead ones (a dead replica's); returns the entries
-- that had expired meanwhile.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return {} end
local missing = {}
for i = 8, #ARGV do
  if redis.call('ZSCORE', KEYS[4], ARGV[i]) then
    redis.call('ZADD', KEYS[4], 'XX', ARGV[1], ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
sweep(ARGV[2], ARGV[3], 4)
return missing
