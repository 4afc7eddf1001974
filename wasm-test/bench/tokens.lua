-- wrk script: one bearer token per request, cycling through a file of tokens (one per line).
-- Usage: wrk ... -s tokens.lua <url> -- <token-file> <threads>
-- Thread i starts at token i and steps by <threads>, so the threads never send the same token
-- at the same time and a pool larger than any token cache gives no cache hits.
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local tokens = {}
local idx = 0
local step = 1

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  step = tonumber(args[2]) or 1
  idx = tid or 0
end

function request()
  local t = tokens[(idx % #tokens) + 1]
  idx = idx + step
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. t })
end
