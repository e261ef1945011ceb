-- broker_spec.lua: API.md "Pub/sub": braid.broker.
local braid = require "braid"

local T = 5

local function drain(ch)
  local out = {}
  while true do
    local v = ch:try_recv()
    if v == nil then return out end
    out[#out + 1] = v
  end
end

describe("braid.broker", function()
  it("delivers to exact subscribers and returns how many got it", function()
    local b = braid.broker()
    local s1 = b:subscribe("orders.new")
    local s2 = b:subscribe("orders.new")
    local other = b:subscribe("orders.old")
    assert.are.equal(2, b:publish("orders.new", { id = 1 }))
    assert.are.same({ id = 1 }, s1:recv(T))
    assert.are.same({ id = 1 }, s2:recv(T))
    assert.are.equal(0, #other)
    assert.are.equal(0, b:publish("nobody.listens", 1))
  end)

  it("'a.*' matches exactly one more token", function()
    local b = braid.broker()
    local s = b:subscribe("a.*")
    assert.are.equal(1, b:publish("a.b", 1))
    assert.are.equal(1, b:publish("a.c", 2))
    assert.are.equal(0, b:publish("a", 3))
    assert.are.equal(0, b:publish("a.b.c", 4))
    assert.are.equal(0, b:publish("x.b", 5))
    assert.are.same({ 1, 2 }, drain(s))
  end)

  it("'*' may stand anywhere", function()
    local b = braid.broker()
    local s = b:subscribe("*.errors.*")
    b:publish("api.errors.500", 1)
    b:publish("db.errors.timeout", 2)
    b:publish("api.errors", 3)
    b:publish("api.warnings.x", 4)
    assert.are.same({ 1, 2 }, drain(s))
  end)

  it("'a.>' matches one or more tokens", function()
    local b = braid.broker()
    local s = b:subscribe("a.>")
    local all = b:subscribe(">")
    b:publish("a.b", 1)
    b:publish("a.b.c.d", 2)
    b:publish("a", 3)
    b:publish("b.a", 4)
    assert.are.same({ 1, 2 }, drain(s))
    assert.are.same({ 1, 2, 3, 4 }, drain(all))
  end)

  it("matches agree with a sequential oracle", function()
    local matches = require("braid.broker")._matches
    local cases = {
      { "a.b", "a.b", true }, { "a.b", "a.c", false }, { "a.*", "a.b", true },
      { "a.*.c", "a.b.c", true }, { "a.*.c", "a.b.d", false }, { "a.>", "a", false },
      { "a.>", "a.b.c", true }, { "*", "a", true }, { "*", "a.b", false },
      { ">", "a.b", true }, { "a.*.>", "a.b", false }, { "a.*.>", "a.b.c", true },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[3], matches(c[1], c[2]), c[1] .. " vs " .. c[2])
    end
  end)

  it("a subscriber that never reads never blocks publish and loses the oldest", function()
    local b = braid.broker({ buffer = 4 })
    local stuck = b:subscribe("t")
    local reader = b:subscribe("t", { buffer = 1000 })
    -- Were publish to wait for the stuck subscriber, the main thread would
    -- block here (and the deadlock check raise): the loop ending is the test.
    for i = 1, 100 do assert.are.equal(2, b:publish("t", i)) end
    assert.are.equal(96, b:stats().dropped)
    assert.are.same({ 97, 98, 99, 100 }, drain(stuck))   -- "slide" keeps the newest
    assert.are.equal(100, #drain(reader))
    local st = b:stats()
    assert.are.equal(100, st.published)
    assert.are.equal(96, st.dropped)
    assert.are.equal(200, st.delivered)
  end)

  it("per-subscription policy 'drop' keeps the oldest", function()
    local b = braid.broker()
    local s = b:subscribe("t", { buffer = 3, policy = "drop" })
    for i = 1, 10 do b:publish("t", i) end
    assert.are.same({ 1, 2, 3 }, drain(s))
    local st = b:stats()
    assert.are.equal(7, st.dropped)
    assert.are.equal(3, st.delivered)
  end)

  it("a 'block' subscription makes publish wait for it", function()
    local b = braid.broker()
    local s = b:subscribe("t", { buffer = 1, policy = "block" })
    b:publish("t", 1)
    local pub = braid.go(function(b) return b:publish("t", 2) end, b)
    local ok, err = pub:wait(0.05)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
    assert.are.equal(1, s:recv(T))
    assert.are.equal(1, pub:await(T))
    assert.are.equal(2, s:recv(T))
  end)

  it("stats lists each subscription with its buffered and dropped counts", function()
    local b = braid.broker({ buffer = 2 })
    local a = b:subscribe("x.*")
    local c = b:subscribe("y", { buffer = 10 })
    for i = 1, 5 do b:publish("x.1", i) end
    b:publish("y", "hello")
    local st = b:stats()
    assert.are.equal(6, st.published)
    assert.are.equal(2, #st.subscriptions)
    table.sort(st.subscriptions, function(p, q) return p.pattern < q.pattern end)
    assert.are.same({ pattern = "x.*", buffered = 2, dropped = 3 }, st.subscriptions[1])
    assert.are.same({ pattern = "y", buffered = 1, dropped = 0 }, st.subscriptions[2])
    assert.are.equal(3, st.dropped)
  end)

  it("unsubscribe stops delivery and closes the channel", function()
    local b = braid.broker()
    local s = b:subscribe("t")
    b:publish("t", 1)
    b:unsubscribe(s)
    assert.are.equal(0, b:publish("t", 2))
    assert.are.equal(1, s:recv(T))            -- buffered values stay readable
    local v, err = s:recv(T)
    assert.is_nil(v)
    assert.are.equal("closed", err)
    assert.are.equal(0, #b:stats().subscriptions)
  end)

  it("ch:close() unsubscribes too", function()
    local b = braid.broker()
    local s = b:subscribe("t")
    local keep = b:subscribe("t")
    s:close()
    assert.are.equal(1, b:publish("t", 1))
    assert.are.equal(1, #b:stats().subscriptions)
    assert.are.equal(1, keep:recv(T))
  end)

  it("is shared: subscribe and publish from other tasks", function()
    local b = braid.broker()
    local got = braid.chan(math.huge)
    local ready = braid.chan()
    local sub = braid.go(function(b, got, ready)
      local s = b:subscribe("news.>")
      ready:send(true)
      for _ = 1, 3 do got:send(s:recv()) end
      return tostring(b)
    end, b, got, ready)
    ready:recv(T)
    local pubs = {}
    for i = 1, 3 do
      pubs[i] = braid.go(function(b, i) return b:publish("news.item" .. i, i) end, b, i)
    end
    for i = 1, 3 do assert.are.equal(1, pubs[i]:await(T)) end
    local s = sub:await(T)
    assert.is_truthy(s:match("^braid%.broker#%d+"))
    assert.are.equal(tostring(b):match("^braid%.broker#%d+"), s:match("^braid%.broker#%d+"))
    local vals = { got:recv(T), got:recv(T), got:recv(T) }
    table.sort(vals)
    assert.are.same({ 1, 2, 3 }, vals)
    assert.are.equal(3, b:stats().published)
  end)

  it("a publisher sees subscriptions made after its first publish", function()
    local b = braid.broker()
    assert.are.equal(0, b:publish("late", 1))
    local s = b:subscribe("late")
    assert.are.equal(1, b:publish("late", 2))
    assert.are.equal(2, s:recv(T))
  end)

  it("tostring gives braid.broker#<id> and the subscription count", function()
    local b = braid.broker()
    b:subscribe("a")
    assert.is_truthy(tostring(b):match("^braid%.broker#%d+ %(1 subscriptions%)$"), tostring(b))
  end)

  it("raises on bad arguments", function()
    local b = braid.broker()
    assert.has_error(function() b:subscribe("a.>.b") end,
      "bad argument #1 to 'broker:subscribe' (invalid pattern 'a.>.b')")
    assert.has_error(function() b:subscribe("") end,
      "bad argument #1 to 'broker:subscribe' (pattern must be a non-empty string)")
    assert.has_error(function() b:publish("a.*", 1) end,
      "bad argument #1 to 'broker:publish' (invalid topic 'a.*')")
    assert.has_error(function() b:publish("a", nil) end,
      "bad argument #2 to 'broker:publish' (a value expected, got nil)")
    assert.has_error(function() b:subscribe("a", { policy = "bogus" }) end,
      "bad argument #2 to 'broker:subscribe' (opts.policy must be 'block', 'drop' or 'slide')")
  end)
end)
