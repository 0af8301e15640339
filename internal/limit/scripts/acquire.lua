local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
	if ARGV[3] == '1' then return -1 end
	redis.call('SET', KEYS[1], '1', 'PX', lease)
end
for i = 2, #KEYS do
	local k = KEYS[i]
	redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
	if redis.call('ZSCORE', k, ARGV[1]) == false and redis.call('ZCARD', k) >= tonumber(ARGV[i + 2]) then
		return i - 1
	end
end
for i = 2, #KEYS do
	local k = KEYS[i]
	redis.call('ZADD', k, now + lease, ARGV[1])
	if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
end
return 0
