local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local exp = now + lease
local i = 3
while i <= #ARGV do
	local m = ARGV[i]
	local n = tonumber(ARGV[i + 1])
	for j = 1, n do
		redis.call('ZADD', KEYS[tonumber(ARGV[i + 1 + j])], 'GT', exp, m)
	end
	i = i + 2 + n
end
for j = 2, #KEYS do
	local k = KEYS[j]
	redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
	if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
end
if ARGV[2] == '1' then redis.call('SET', KEYS[1], '1', 'PX', lease) end
return 0
