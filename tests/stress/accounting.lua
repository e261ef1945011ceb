-- tests/stress/accounting.lua -- issue 16's randomized stress with exact
-- accounting of every value.
--
-- Rounds of a few seconds.  Each round makes one channel of every capacity
-- and policy (block 0/1/4/32/unbounded, drop 0/1/4, slide 0/1/4) and starts
-- traders (never cancelled) and victims (cancelled at random times), all
-- running the same random mix: send, recv (timeouts 0, short, none),
-- try_send, try_recv, select over 1-4 send/recv cases (timeout or
-- default), iter, close with and without an error, yield and sleep.  Every
-- value is unique (round, task, sequence number), so duplicates show.
-- Two channels a round are closed by the main thread mid-round (one with
-- an error), now and then one by a task; the rest at the round's end.  Each
-- task logs what every call said: a value whose send (or select send case)
-- returned true was accepted; one whose send returned false, timed out,
-- raised "cancelled", or hit a closed channel was not.  At the end of the
-- round every victim is cancelled, every channel closed, every task
-- awaited, every channel drained; then for each channel:
--
--   accepted = received + drained + stats().dropped        (block: dropped 0)
--   every received or drained value was accepted, and seen exactly once
--   stats().received = received + drained, #ch = 0
--
-- The one thing a log cannot know: a cancellation that the preemption hook
-- raises (a victim that was running when cancelled reaches the end of its
-- slice) between a call returning and the log line after it.  The task's
-- outer pcall then records the operation in flight as "unknown" (a send
-- that may or may not have happened, a receive that may have taken a
-- value), and the channel's equation must hold for some outcome of its
-- unknowns.  Runs print how many there were (almost always 0).
--
-- Usage: as a module, require/dofile it and call run{...}; as a script,
--   lua5.4 tests/stress/accounting.lua [seconds [seed]]
-- (env BRAID_STRESS_SECONDS, BRAID_STRESS_SEED, BRAID_STRESS_TASKS: the
-- traders, default 200, BRAID_STRESS_VICTIMS: default 100).
-- The seed is printed; it reproduces every random choice of the main
-- thread and of each task (not the threads' interleaving).
local braid = require "braid"

local M = {}

M.SPECS = {
  { 0, "block" }, { 1, "block" }, { 4, "block" }, { 32, "block" }, { math.huge, "block" },
  { 0, "drop" }, { 1, "drop" }, { 4, "drop" },
  { 0, "slide" }, { 1, "slide" }, { 4, "slide" },
}

-- The body of every task.  Returns its log (a victim catches its
-- cancellation and returns it too).
local function task_main(id, round, chans, seed, deadline, close_after, started)
  math.randomseed(seed)
  local rnd = math.random
  local nch = #chans
  local base = (round << 40) | (id << 22)
  local log = { acc = {}, rec = {}, usend = {}, urecv = {}, bad = {}, ops = 0,
                cancelled = false, closes = 0, id = id,
                kinds = { send = 0, recv = 0, try_send = 0, try_recv = 0, select = 0, iter = 0 } }
  for ci = 1, nch do log.acc[ci] = {}; log.rec[ci] = {}; log.urecv[ci] = 0 end
  local acc, rec, kinds = log.acc, log.rec, log.kinds
  local k = 0
  local inflight = nil             -- what a cut-short log line would lose
  local CANCEL = {}

  local function bad(...)
    if #log.bad < 20 then
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      log.bad[#log.bad + 1] = table.concat(parts, " ")
    end
  end
  local function value()
    k = k + 1
    assert(k < (1 << 22), "too many values in one round")
    return base + k
  end
  local function timeout()
    local r = rnd(10)
    if r <= 2 then return 0 elseif r <= 8 then return rnd() * 0.003 elseif r == 9 then return 0.02 end
    return nil                     -- forever: the round's closes end it
  end
  local function closed_why(ci, why)
    return why == "closed" or why == "eclose" .. ci
  end
  -- A call (a C function under pcall: no Lua line between its return and
  -- ours) raised: "cancelled" means it did not happen.
  local function raised(what, err)
    inflight = nil
    if err == "cancelled" then error(CANCEL) end
    bad(what, "raised", err)
  end

  local function do_send(ci)
    kinds.send = kinds.send + 1
    local ch, v = chans[ci], value()
    inflight = { { "s", ci, v } }
    local ok, r, why = pcall(ch.send, ch, v, timeout())
    if not ok then return raised("send", r) end
    if r == true then local a = acc[ci]; a[#a + 1] = v
    elseif r ~= false or not (why == "timeout" or why == "closed") then bad("send", ci, r, why) end
    inflight = nil
  end

  local function do_recv(ci)
    kinds.recv = kinds.recv + 1
    local ch = chans[ci]
    inflight = { { "r", ci } }
    local ok, v, why = pcall(ch.recv, ch, timeout())
    if not ok then return raised("recv", v) end
    if v ~= nil then local t = rec[ci]; t[#t + 1] = v
    elseif not (why == "timeout" or closed_why(ci, why)) then bad("recv", ci, v, why) end
    inflight = nil
  end

  local function do_try_send(ci)
    kinds.try_send = kinds.try_send + 1
    local ch, v = chans[ci], value()
    inflight = { { "s", ci, v } }
    local ok, r, why = pcall(ch.try_send, ch, v)
    if not ok then return raised("try_send", r) end
    if r == true then local a = acc[ci]; a[#a + 1] = v
    elseif r ~= false or not (why == "full" or why == "closed") then bad("try_send", ci, r, why) end
    inflight = nil
  end

  local function do_try_recv(ci)
    kinds.try_recv = kinds.try_recv + 1
    local ch = chans[ci]
    inflight = { { "r", ci } }
    local ok, v, why = pcall(ch.try_recv, ch)
    if not ok then return raised("try_recv", v) end
    if v ~= nil then local t = rec[ci]; t[#t + 1] = v
    elseif not (why == "empty" or closed_why(ci, why)) then bad("try_recv", ci, v, why) end
    inflight = nil
  end

  local function do_select()
    kinds.select = kinds.select + 1
    local cases, meta = {}, {}
    for _ = 1, rnd(4) do
      local ci = rnd(nch)
      if rnd(2) == 1 then
        local v = value()
        cases[#cases + 1] = { chans[ci], v }; meta[#meta + 1] = { "s", ci, v }
      else
        cases[#cases + 1] = chans[ci]; meta[#meta + 1] = { "r", ci }
      end
    end
    local dflt = rnd(4) == 1
    local opts = dflt and { default = true } or { timeout = timeout() }
    inflight = meta
    local ok, i, v, why = pcall(braid.select, cases, opts)
    if not ok then return raised("select", i) end
    if i == nil then
      if v ~= nil or why ~= (dflt and "empty" or "timeout") then bad("select none", v, why) end
    else
      local m = meta[i]
      if m == nil then bad("select index", i)
      elseif m[1] == "s" then
        if v == true then local a = acc[m[2]]; a[#a + 1] = m[3]
        elseif not (v == false and why == "closed") then bad("select send", m[2], v, why) end
      else
        if v ~= nil then local t = rec[m[2]]; t[#t + 1] = v
        elseif not closed_why(m[2], why) then bad("select recv", m[2], v, why) end
      end
    end
    inflight = nil
  end

  -- iter: the generic for's protocol by hand (the iterator is a C
  -- function, called under pcall like the others, so no Lua line runs
  -- between its return and ours): values until timeout or close; after
  -- close(err) it raises err.
  local function do_iter(ci)
    kinds.iter = kinds.iter + 1
    local ch = chans[ci]
    local it = ch:iter(rnd() * 0.002)
    for _ = 1, rnd(3) do
      inflight = { { "r", ci } }
      local ok, v = pcall(it)
      if not ok then
        if not closed_why(ci, v) then return raised("iter", v) end
        break
      end
      if v == nil then break end
      local t = rec[ci]; t[#t + 1] = v
      inflight = nil
    end
    inflight = nil
  end

  local function body()
    started:try_send(id)           -- never blocks: no cancellation here
    while braid.now() < deadline do
      if braid.cancelled() then log.cancelled = true return end
      local op = rnd(100)
      local ci = rnd(nch)
      if op <= 20 then do_send(ci)
      elseif op <= 40 then do_recv(ci)
      elseif op <= 50 then do_try_send(ci)
      elseif op <= 60 then do_try_recv(ci)
      elseif op <= 84 then do_select()
      elseif op <= 90 then do_iter(ci)
      elseif op <= 97 then
        local ok, err = pcall(rnd(2) == 1 and braid.yield or braid.sleep, rnd() * 0.001)
        if not ok then raised("sleep", err) end
      elseif rnd(20000) == 1 and braid.now() > close_after then
        if rnd(2) == 1 then chans[ci]:close() else chans[ci]:close("eclose" .. ci) end
        log.closes = log.closes + 1
      end
      log.ops = log.ops + 1
    end
    -- A last burst that leaves values buffered for the round's drain.
    for _ = 1, rnd(4) do do_try_send(rnd(nch)) end
  end

  local ok, err = pcall(body)
  if not ok then
    if err == CANCEL then
      log.cancelled = true
    elseif err == "cancelled" then
      -- Raised by the preemption hook, somewhere in our own lines.
      log.cancelled = true
      for _, m in ipairs(inflight or {}) do
        if m[1] == "s" then log.usend[#log.usend + 1] = { m[2], m[3] }
        else log.urecv[m[2]] = log.urecv[m[2]] + 1 end
      end
    else
      bad("task raised", err)
    end
  end
  return log
end

local function shuffle(t, rnd)
  for i = #t, 2, -1 do
    local j = rnd(i)
    t[i], t[j] = t[j], t[i]
  end
end

-- One round.  Adds its figures to tot and its problems to problems.
local function run_round(round, opts, tot, problems)
  local rnd = math.random
  local function problem(fmt, ...)
    if #problems < 30 then problems[#problems + 1] = ("round %d: " .. fmt):format(round, ...) end
  end
  local chans = {}
  for ci, s in ipairs(M.SPECS) do chans[ci] = braid.chan(s[1], s[2]) end
  local started = braid.chan(math.huge)
  local t0 = braid.now()
  local deadline = t0 + opts.round_seconds
  local close_after = t0 + opts.round_seconds * 0.6
  local traders, victims = {}, {}
  for i = 1, opts.traders + opts.victims do
    local f = braid.go(task_main, i, round, chans, rnd(1 << 40), i <= opts.traders and deadline or deadline + 30,
      close_after, started)
    if i <= opts.traders then traders[#traders + 1] = f else victims[#victims + 1] = { f = f, id = i } end
  end
  -- Cancel the victims in random order over the round.
  local order = {}
  for i = 1, #victims do order[i] = i end
  shuffle(order, rnd)
  -- At 70% of the round the main thread closes two random channels, one
  -- with an error (tasks close one now and then too).
  local next_v, mid_closed = 1, false
  local close_at = t0 + opts.round_seconds * 0.7
  while braid.now() < deadline and next_v <= #order do
    braid.sleep(rnd() * 2 * opts.round_seconds / #order)
    victims[order[next_v]].f:cancel()
    next_v = next_v + 1
    if not mid_closed and braid.now() >= close_at then
      mid_closed = true
      local a, b = rnd(#chans), rnd(#chans)
      chans[a]:close()
      chans[b]:close("eclose" .. b)
      tot.closes = tot.closes + 2
    end
  end
  for i = next_v, #order do victims[order[i]].f:cancel() end
  -- Past the traders' deadline (so that values stay buffered for the
  -- drain), close every channel, half with an error: blocked calls end.
  braid.sleep(math.max(deadline - braid.now(), 0) + 0.05)
  for ci, ch in ipairs(chans) do
    if rnd(2) == 1 then ch:close() else ch:close("eclose" .. ci) end
  end
  local logs = {}
  for _, f in ipairs(traders) do
    local ok, log = f:wait(120)
    if not ok then problem("a trader failed: %s", tostring(log)) else logs[#logs + 1] = log end
  end
  local cancelled_early = 0
  local ran = {}
  for id in started:iter(0) do ran[id] = true end
  for _, v in ipairs(victims) do
    local ok, log = v.f:wait(120)
    if ok then
      logs[#logs + 1] = log
      tot.cancels = tot.cancels + (log.cancelled and 1 or 0)
    elseif log == "cancelled" then
      -- Cancelled before it ran: it did nothing.  One that ran and whose
      -- log is lost (a hook cancellation outside its pcall) cannot be
      -- accounted for.
      if ran[v.id] then problem("victim %d ran but its log was lost (cancelled outside its pcall)", v.id) end
      cancelled_early = cancelled_early + 1
      tot.cancels = tot.cancels + 1
    else
      problem("a victim failed: %s", tostring(log))
    end
  end
  tot.cancelled_early = tot.cancelled_early + cancelled_early

  -- Drain.
  local drained = {}
  for ci, ch in ipairs(chans) do
    local d = {}
    while true do
      local v, why = ch:try_recv()
      if v == nil then
        if not (why == "closed" or why == "eclose" .. ci) then problem("drain of %d: %s", ci, tostring(why)) end
        break
      end
      d[#d + 1] = v
    end
    drained[ci] = d
  end

  -- opts.inject corrupts one log, to prove the accounting catches it.
  if opts.inject and round == 1 then
    for _, log in ipairs(logs) do
      local r = log.rec[2]                     -- chan(1, "block")
      if #r > 0 then
        if opts.inject == "lose" then table.remove(r)
        elseif opts.inject == "duplicate" then r[#r + 1] = r[1]
        elseif opts.inject == "phantom" then r[#r + 1] = (round << 40) | (4095 << 22) | 1 end
        break
      end
    end
  end

  -- Account for every channel.
  for _, log in ipairs(logs) do
    for _, b in ipairs(log.bad) do problem("task %d: %s", log.id, b) end
    tot.ops = tot.ops + log.ops
    tot.closes = tot.closes + log.closes
    for kind, n in pairs(log.kinds) do tot.kinds[kind] = (tot.kinds[kind] or 0) + n end
  end
  for ci, ch in ipairs(chans) do
    local spec = ("chan(%s, %q)"):format(tostring(M.SPECS[ci][1]), M.SPECS[ci][2])
    local accepted, nacc = {}, 0
    local usend, nus, urecv = {}, 0, 0
    for _, log in ipairs(logs) do
      for _, v in ipairs(log.acc[ci]) do
        if accepted[v] then problem("%s: value %d accepted twice", spec, v) end
        accepted[v] = true
        nacc = nacc + 1
      end
      for _, u in ipairs(log.usend) do
        if u[1] == ci and not accepted[u[2]] then usend[u[2]] = true; nus = nus + 1 end
      end
      urecv = urecv + log.urecv[ci]
    end
    -- (a send logged as accepted and also left in flight is not unknown)
    for v in pairs(usend) do if accepted[v] then usend[v] = nil; nus = nus - 1 end end
    local seen, nseen, nus_seen = {}, 0, 0
    local function see(v, where)
      if seen[v] then problem("%s: value %d received twice (%s)", spec, v, where) return end
      seen[v] = true
      nseen = nseen + 1
      if usend[v] then nus_seen = nus_seen + 1
      elseif not accepted[v] then problem("%s: value %d %s but its send did not deliver", spec, v, where) end
    end
    local nrec = 0
    for _, log in ipairs(logs) do
      for _, v in ipairs(log.rec[ci]) do see(v, "received"); nrec = nrec + 1 end
    end
    for _, v in ipairs(drained[ci]) do see(v, "drained") end
    local st = ch:stats()
    -- accepted + (unknown sends that were received) + x
    --   = seen + y + dropped,   x in [0, unknown sends unseen], y in [0, unknown receives]
    local diff = nacc + nus_seen - nseen - st.dropped
    if diff < -(nus - nus_seen) or diff > urecv then
      local missing = {}
      for v in pairs(accepted) do
        if not seen[v] and #missing < 5 then missing[#missing + 1] = tostring(v) end
      end
      problem("%s: %d accepted, %d received, %d drained, %d dropped (%d unknown sends, %d unknown receives);"
        .. " not seen: %s", spec, nacc, nrec, #drained[ci], st.dropped, nus, urecv, table.concat(missing, " "))
    end
    if M.SPECS[ci][2] == "block" and st.dropped ~= 0 then problem("%s: %d dropped", spec, st.dropped) end
    local rdiff = st.received - nseen
    if rdiff < 0 or rdiff > urecv then
      problem("%s: stats().received %d, %d values seen (%d unknown receives)", spec, st.received, nseen, urecv)
    end
    if #ch ~= 0 then problem("%s: %d values left after the drain", spec, #ch) end
    tot.accepted = tot.accepted + nacc
    tot.received = tot.received + nrec
    tot.drained = tot.drained + #drained[ci]
    tot.dropped = tot.dropped + st.dropped
    tot.unknown = tot.unknown + nus + urecv
  end
end

-- run{seconds=, seed=, traders=, victims=, round_seconds=, quiet=}:
-- returns ok, report (a table: figures, problems, seed).
function M.run(opts)
  opts = opts or {}
  local seconds = opts.seconds or 20
  local seed = opts.seed or (os.time() ~ math.floor(braid.now() * 1e6))
  opts.traders = opts.traders or 200
  opts.victims = opts.victims or 100
  opts.round_seconds = opts.round_seconds or math.min(2, seconds / 3)
  local say = opts.quiet and function() end or function(...) print(...) io.stdout:flush() end
  say(("stress accounting: seed %d, %.0f s, rounds of %.1f s, %d traders + %d victims, %d channels")
    :format(seed, seconds, opts.round_seconds, opts.traders, opts.victims, #M.SPECS))
  math.randomseed(seed)
  local tot = { ops = 0, accepted = 0, received = 0, drained = 0, dropped = 0, unknown = 0,
                cancels = 0, cancelled_early = 0, closes = 0, rounds = 0, kinds = {} }
  local problems = {}
  local t_end = braid.now() + seconds
  repeat
    tot.rounds = tot.rounds + 1
    run_round(tot.rounds, opts, tot, problems)
    -- Nothing is left behind between rounds.
    for _ = 1, 1000 do
      if braid.stats().tasks == 0 then break end
      braid.sleep(0.01)
    end
    if braid.stats().tasks ~= 0 then
      problems[#problems + 1] = ("round %d: %d tasks still live"):format(tot.rounds, braid.stats().tasks)
    end
  until braid.now() + opts.round_seconds > t_end or #problems > 0
  local kinds = {}
  for kind, n in pairs(tot.kinds) do kinds[#kinds + 1] = kind .. " " .. n end
  table.sort(kinds)
  say(("  %d rounds, %d operations (%s), %d cancels (%d before running), %d closes mid-round")
    :format(tot.rounds, tot.ops, table.concat(kinds, ", "), tot.cancels, tot.cancelled_early, tot.closes))
  say(("  values: %d accepted = %d received + %d drained + %d dropped; %d unknown (cancelled mid-log)")
    :format(tot.accepted, tot.received, tot.drained, tot.dropped, tot.unknown))
  for _, p in ipairs(problems) do say("  PROBLEM " .. p) end
  if #problems > 0 then say(("  reproduce the choices with seed %d"):format(seed)) end
  tot.seed, tot.problems = seed, problems
  return #problems == 0, tot
end

-- As a script: lua5.4 tests/stress/accounting.lua [seconds [seed]]
if arg and arg[0] and arg[0]:match("accounting%.lua$") then
  local ok = M.run({
    seconds = tonumber(arg[1] or os.getenv("BRAID_STRESS_SECONDS") or "20"),
    seed = tonumber(arg[2] or os.getenv("BRAID_STRESS_SEED") or ""),
    traders = tonumber(os.getenv("BRAID_STRESS_TASKS") or ""),
    victims = tonumber(os.getenv("BRAID_STRESS_VICTIMS") or ""),
  })
  os.exit(ok and 0 or 1)
end

return M
