local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local exp = now + lease
for j = 2, #KEYS do
	redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', now)
end
local refused = {}
local i = 3
local n_stream = 0
while i <= #ARGV do
	n_stream = n_stream + 1
	local m = ARGV[i]
	local n = tonumber(ARGV[i + 1])
	local fits = true
	for j = 1, n do
		local k = KEYS[tonumber(ARGV[i + 2 * j])]
		if redis.call('ZSCORE', k, m) == false and redis.call('ZCARD', k) >= tonumber(ARGV[i + 1 + 2 * j]) then
			fits = false
			break
		end
	end
	for j = 1, n do
		local k = KEYS[tonumber(ARGV[i + 2 * j])]
		if fits then
			redis.call('ZADD', k, 'GT', exp, m)
		else
			redis.call('ZREM', k, m)
		end
	end
	if not fits then refused[#refused + 1] = n_stream end
	i = i + 2 + 2 * n
end
for j = 2, #KEYS do
	local k = KEYS[j]
	if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
end
if ARGV[2] == '1' then redis.call('SET', KEYS[1], '1', 'PX', lease) end
return refused
