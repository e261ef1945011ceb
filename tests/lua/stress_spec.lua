-- stress_spec.lua: thousands of tasks doing random channel, select, future,
-- close and cancel operations for a few seconds, then invariants (API.md
-- "Channels": a value sent is received exactly once; "Futures": the first
-- settle wins; "Runtime": cancelled tasks go away).
--
-- Two kinds of tasks:
--  * traders are never cancelled.  They send, receive, select, settle and
--    close on the "tracked" channels and log every value that a call says it
--    sent or received, so that exactly-once can be checked.
--  * victims block forever (recv, send, select, sleep, await, spin) and are
--    cancelled at random times.  A victim may be cancelled right after it
--    received a value, so values that can reach a victim ("victim domain")
--    are only checked for at-most-once.
local braid = require "braid"

local pack = table.pack

local TRADERS, VICTIMS = 4000, 1000
local RUN_SECONDS = 3
local VICTIM_DOMAIN = 500000   -- trader values >= id*1e6 + this go to victim channels

local function trader(id, tracked, closable, vchans, futs, deadline, close_after, seed)
  math.randomseed(seed)
  local rnd = math.random
  local log = { sent = {}, recv = {}, vsent = {}, vrecv = {}, settled = {}, seen = {}, bad = {} }
  local k = 0
  local function value(victim_domain)
    k = k + 1
    return id * 1000000 + (victim_domain and VICTIM_DOMAIN or 0) + k
  end
  local function bad(what, ...)
    local parts = { what }
    for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
    log.bad[#log.bad + 1] = table.concat(parts, " ")
  end
  local function push(t, v) t[#t + 1] = v end
  local send_fail = { timeout = true, closed = true }
  local recv_fail = { timeout = true, closed = true, eclose = true }
  local function observe(fi)
    local r = pack(futs[fi]:wait(rnd() * 0.003))
    if r[1] == true then push(log.seen, { fi, true, r[2] })
    elseif r[2] ~= "timeout" then push(log.seen, { fi, false, r[2] }) end
  end

  while braid.now() < deadline do
    local op = rnd(100)
    local ch = tracked[rnd(#tracked)]
    if op <= 18 then
      local v = value(false)
      local r, why = ch:send(v, rnd() * 0.01)
      if r == true then push(log.sent, v)
      elseif r ~= false or not send_fail[why] then bad("send", r, why) end
    elseif op <= 36 then
      local v, why = ch:recv(rnd() * 0.01)
      if v ~= nil then push(log.recv, v)
      elseif not recv_fail[why] then bad("recv", v, why) end
    elseif op <= 44 then
      local v = value(false)
      local r, why = ch:try_send(v)
      if r == true then push(log.sent, v)
      elseif r ~= false or not (why == "full" or why == "closed") then bad("try_send", r, why) end
    elseif op <= 52 then
      local v, why = ch:try_recv()
      if v ~= nil then push(log.recv, v)
      elseif not (why == "empty" or why == "closed" or why == "eclose") then bad("try_recv", v, why) end
    elseif op <= 76 then
      -- select over 1..4 random cases, maybe a victim channel and a future.
      local cases, meta = {}, {}
      for _ = 1, rnd(4) do
        local c = tracked[rnd(#tracked)]
        if rnd(2) == 1 then
          local v = value(false)
          push(cases, { c, v }); push(meta, { kind = "send", v = v })
        else
          push(cases, c); push(meta, { kind = "recv" })
        end
      end
      if rnd(4) == 1 then
        local vc = vchans[rnd(#vchans)]
        if rnd(2) == 1 then
          local v = value(true)
          push(cases, { vc, v }); push(meta, { kind = "vsend", v = v })
        else
          push(cases, vc); push(meta, { kind = "vrecv" })
        end
      end
      if rnd(4) == 1 then
        local fi = rnd(#futs)
        push(cases, futs[fi]); push(meta, { kind = "fut", fi = fi })
      end
      local use_default = rnd(3) == 1
      local opts = use_default and { default = true } or { timeout = rnd() * 0.01 }
      local i, v, why = braid.select(cases, opts)
      if i == nil then
        if v ~= nil or why ~= (use_default and "empty" or "timeout") then bad("select none", v, why) end
      else
        local m = meta[i]
        if m == nil then bad("select index", i)
        elseif m.kind == "send" or m.kind == "vsend" then
          if v == true then push(m.kind == "send" and log.sent or log.vsent, m.v)
          elseif not (v == false and why == "closed") then bad("select send", v, why) end
        elseif m.kind == "recv" or m.kind == "vrecv" then
          if v ~= nil then push(m.kind == "recv" and log.recv or log.vrecv, v)
          elseif not (why == "closed" or why == "eclose") then bad("select recv", v, why) end
        else
          observe(m.fi)
        end
      end
    elseif op <= 84 then
      local vc = vchans[rnd(#vchans)]
      if rnd(2) == 1 then
        local v = value(true)
        local r, why = vc:send(v, rnd() * 0.005)
        if r == true then push(log.vsent, v)
        elseif r ~= false or not send_fail[why] then bad("vsend", r, why) end
      else
        local v, why = vc:recv(rnd() * 0.005)
        if v ~= nil then push(log.vrecv, v)
        elseif not recv_fail[why] then bad("vrecv", v, why) end
      end
    elseif op <= 92 then
      local fi = rnd(#futs)
      if rnd(3) == 1 then
        local won
        if rnd(2) == 1 then
          won = futs[fi]:resolve(id)
          if won == true then push(log.settled, { fi, true, id }) end
        else
          won = futs[fi]:reject("r" .. id)
          if won == true then push(log.settled, { fi, false, "r" .. id }) end
        end
        if won ~= true and won ~= false then bad("settle", won) end
      else
        observe(fi)
      end
    elseif op <= 97 then
      if rnd(2) == 1 then braid.yield() else braid.sleep(rnd() * 0.002) end
    elseif rnd(5000) == 1 and braid.now() > close_after then
      local c = closable[rnd(#closable)]
      if rnd(2) == 1 then c:close() else c:close("eclose") end
    end
  end
  return log
end

local function victim(j, vchans, kind)
  local k = 0
  local function value() k = k + 1; return -(j * 1000000 + k) end
  if kind == 0 then
    while true do
      local v = vchans[1]:recv()
      if v == nil then return "closed" end
    end
  elseif kind == 1 then
    while true do
      if vchans[2]:send(value()) ~= true then return "closed" end
    end
  elseif kind == 2 then
    braid.sleep(60)
    return "slept"
  elseif kind == 3 then
    return braid.future():await()
  elseif kind == 4 then
    local never = braid.future()
    while true do
      local i, v = braid.select({ vchans[1], { vchans[2], value() }, never })
      if (i == 1 and v == nil) or (i == 2 and v == false) then return "closed" end
    end
  else
    -- Stops by itself (long after the run, even on a loaded machine) so that a lost cancellation
    -- fails the check below instead of hanging the process.
    local t0, x = braid.now(), 0
    while braid.now() - t0 < 45 do x = x + 1 end
    return "not cancelled"
  end
end

local function count_into(counts, list)
  for _, v in ipairs(list) do counts[v] = (counts[v] or 0) + 1 end
end

describe("stress #stress", function()
  it("spawns and awaits 5000 trivial tasks", function()
    local fs = {}
    for i = 1, 5000 do fs[i] = braid.go(function(x) return x * 2 end, i) end
    local sum = 0
    for i = 1, 5000 do sum = sum + fs[i]:await(30) end
    assert.equal(5000 * 5001, sum)
  end)

  it("fans 5000 tasks into one channel, each value exactly once", function()
    local ch = braid.chan(64)
    for i = 1, 5000 do braid.go(function(x) ch:send(x) end, i) end
    local seen = {}
    for _ = 1, 5000 do
      local v = ch:recv(30)
      assert(v ~= nil and seen[v] == nil, "missing or duplicate value " .. tostring(v))
      seen[v] = true
    end
    assert.same({ nil, "empty", n = 2 }, pack(ch:try_recv()))
  end)

  it("keeps exactly-once under random select/send/recv/close/cancel", function()
    local start = braid.now()
    local tracked = {
      braid.chan(), braid.chan(1), braid.chan(16), braid.chan(math.huge),
      braid.chan(), braid.chan(8), braid.chan(math.huge),
    }
    local closable = { tracked[5], tracked[6], tracked[7] }
    local vchans = { braid.chan(), braid.chan(4) }
    local futs = {}
    for i = 1, 32 do futs[i] = braid.future() end
    local deadline = start + RUN_SECONDS
    local close_after = start + 1

    local traders, victims = {}, {}
    math.randomseed(12345)
    for i = 1, math.max(TRADERS, VICTIMS) do
      if i <= TRADERS then
        traders[i] = braid.go(trader, i, tracked, closable, vchans, futs, deadline, close_after,
          math.random(1 << 30))
      end
      if i <= VICTIMS then
        local kind = i % 5
        if i % 125 == 0 then kind = 5 end   -- a few CPU spinners
        victims[i] = braid.go(victim, i, vchans, kind)
      end
    end

    -- Cancel victims in random order while the traders run.
    local order = {}
    for i = 1, VICTIMS do order[i] = i end
    for i = VICTIMS, 2, -1 do
      local j = math.random(i)
      order[i], order[j] = order[j], order[i]
    end
    local next_victim = 1
    while braid.now() < deadline and next_victim <= VICTIMS do
      braid.sleep(0.005)
      victims[order[next_victim]]:cancel()
      next_victim = next_victim + 1
    end

    -- Collect the traders' logs.
    local logs = {}
    for i = 1, TRADERS do
      local r = pack(traders[i]:wait(60))
      assert(r[1] == true, "trader " .. i .. " failed: " .. tostring(r[2]))
      logs[i] = r[2]
    end

    -- Cancel the remaining victims, close everything, drain.
    for i = next_victim, VICTIMS do victims[order[i]]:cancel() end
    for _, vc in ipairs(vchans) do vc:close() end
    for _, c in ipairs(tracked) do c:close() end
    local drained = {}
    for ci, c in ipairs(tracked) do
      while true do
        local v, why = c:try_recv()
        if v == nil then
          assert(why == "closed" or why == "eclose", "drain of channel " .. ci .. ": " .. tostring(why))
          break
        end
        drained[#drained + 1] = v
      end
    end

    -- No anomalies in return values.
    local anomalies = {}
    for i = 1, TRADERS do
      for _, b in ipairs(logs[i].bad) do
        if #anomalies < 10 then anomalies[#anomalies + 1] = "trader " .. i .. ": " .. b end
      end
    end
    assert.same({}, anomalies)

    -- Tracked channels: every confirmed send received exactly once, nothing
    -- else received.
    local sent, counts, nsent = {}, {}, 0
    for i = 1, TRADERS do
      for _, v in ipairs(logs[i].sent) do
        assert(sent[v] == nil, "value sent twice by its trader: " .. v)
        sent[v] = true
        nsent = nsent + 1
      end
      count_into(counts, logs[i].recv)
    end
    count_into(counts, drained)
    local problems = {}
    for v, n in pairs(counts) do
      if n ~= 1 then problems[#problems + 1] = ("value %d received %d times"):format(v, n)
      elseif not sent[v] then problems[#problems + 1] = ("value %d received but never sent"):format(v) end
      if #problems >= 10 then break end
    end
    for v in pairs(sent) do
      if #problems >= 10 then break end
      if counts[v] == nil then problems[#problems + 1] = ("value %d sent but never received"):format(v) end
    end
    assert.same({}, problems)
    -- (a sanity floor, not a speed target: TSan on a loaded machine is slow)
    assert.is_true(nsent > 200, "only " .. nsent .. " values sent")

    -- Channel statistics agree: everything that entered left exactly once.
    local entered, left = 0, 0
    for _, c in ipairs(tracked) do
      local s = c:stats()
      entered, left = entered + s.sent, left + s.received
      assert.equal(0, s.dropped)
      assert.equal(0, #c)
    end
    assert.equal(nsent, entered)
    assert.equal(nsent, left)

    -- Victim channels: at most once; trader values only if a trader sent them.
    local vsent, vcounts = {}, {}
    for i = 1, TRADERS do
      for _, v in ipairs(logs[i].vsent) do vsent[v] = true end
      count_into(vcounts, logs[i].vrecv)
    end
    for v, n in pairs(vcounts) do
      assert(n == 1, ("victim-channel value %d received %d times"):format(v, n))
      assert(v < 0 or vsent[v], ("victim-channel value %d received but never sent"):format(v))
    end

    -- Futures: at most one settle won; everyone saw the winner's outcome.
    local winners, seen = {}, {}
    for i = 1, TRADERS do
      for _, s in ipairs(logs[i].settled) do
        assert(winners[s[1]] == nil, "future " .. s[1] .. " settled twice")
        winners[s[1]] = s
      end
      for _, o in ipairs(logs[i].seen) do
        seen[o[1]] = seen[o[1]] or {}
        table.insert(seen[o[1]], o)
      end
    end
    for fi, f in ipairs(futs) do
      local w = winners[fi]
      if w == nil then
        assert.equal("pending", f:status())
        assert.is_nil(seen[fi])
      else
        assert.equal(w[2] and "resolved" or "rejected", f:status())
        assert.same({ w[2], w[3], n = 2 }, pack(f:wait(0)))
        for _, o in ipairs(seen[fi] or {}) do
          assert(o[2] == w[2] and o[3] == w[3], "future " .. fi .. " seen as " .. tostring(o[3]))
        end
      end
    end

    -- Victims: cancelled, or finished because their channel closed.
    for i = 1, VICTIMS do
      local r = pack(victims[i]:wait(30))
      local st = victims[i]:status()
      if r[1] then
        assert(st == "resolved" and (r[2] == "closed" or r[2] == "slept"),
          "victim " .. i .. ": " .. st .. " " .. tostring(r[2]))
      else
        assert(r[2] == "cancelled" and st == "cancelled",
          "victim " .. i .. ": " .. st .. " " .. tostring(r[2]))
      end
    end

    -- Nothing is left behind.
    local live
    local gone = false
    local until_t = braid.now() + 15
    while braid.now() < until_t do
      live = braid.stats().tasks
      if live == 0 then gone = true break end
      braid.sleep(0.02)
    end
    assert(gone, "tasks still live: " .. tostring(live))
    assert.same({}, braid.tasks())
  end)
end)
