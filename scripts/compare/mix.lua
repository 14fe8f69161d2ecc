-- wrk script for the 1,000-key random mix of scripts/compare.sh: every request asks for one of
-- MIX_KEYS (default 1000) URLs, /mix/1?size=1024 ... /mix/N?size=1024, picked uniformly at
-- random. compare.sh warms all of them first, so every request is a hit. The requests are
-- formatted once, in init, so the script costs wrk as little as it can per request.

local requests = {}
local keys = tonumber(os.getenv("MIX_KEYS") or "") or 1000

function init(args)
   -- A different sequence per run and per thread.
   math.randomseed(os.time() + math.floor(os.clock() * 1000000))
   for i = 1, keys do
      requests[i] = wrk.format("GET", "/mix/" .. i .. "?size=1024")
   end
end

function request()
   return requests[math.random(keys)]
end
