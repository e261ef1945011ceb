-- codec_spec.lua -- values that cross threads (API.md), checked through
-- braid._roundtrip(...), which returns decode(encode(...)) in the same
-- state with the root "value".

local braid = require "braid"
local roundtrip = braid._roundtrip

local function errof(...)
  local ok, err = pcall(roundtrip, ...)
  assert.is_false(ok)
  return err
end

describe("braid codec", function()
  describe("scalars", function()
    it("keeps nil, booleans and the integer/float subtype", function()
      local a = table.pack(roundtrip(nil, true, false, 0, 3, 3.0, math.mininteger, math.maxinteger, 2^53))
      assert.equal(9, a.n)
      assert.is_nil(a[1])
      assert.is_true(a[2])
      assert.is_false(a[3])
      assert.equal("integer", math.type(a[4]))
      assert.equal("integer", math.type(a[5]))
      assert.equal("float", math.type(a[6]))
      assert.equal(math.mininteger, a[7])
      assert.equal("integer", math.type(a[7]))
      assert.equal(math.maxinteger, a[8])
      assert.equal("float", math.type(a[9]))
    end)

    it("keeps every single integer, on both sides of the immediate range (2^62)", function()
      -- One integer travels in the message pointer (core/msg.h) when it
      -- fits in 63 bits; the others take a real message.  Both must agree.
      local edge = 1 << 62
      local ints = { 0, 1, -1, edge - 1, edge, -edge, -edge - 1, math.maxinteger,
                     math.mininteger, 12345678901234 }
      local ch = braid.chan(#ints)
      for _, i in ipairs(ints) do
        local v = roundtrip(i)
        assert.equal(i, v)
        assert.equal("integer", math.type(v))
        assert.is_true(ch:send(i))
      end
      for _, i in ipairs(ints) do
        local v = ch:recv()
        assert.equal(i, v)
        assert.equal("integer", math.type(v))
      end
      for _, i in ipairs(ints) do
        local v = braid.go(function(x) return x end, i):await()
        assert.equal(i, v)
        assert.equal("integer", math.type(v))
      end
      assert.equal(2.0, roundtrip(2.0))
      assert.equal("float", math.type(roundtrip(2.0)))
    end)

    it("keeps -0.0, NaN and infinities", function()
      local nz, nan, inf, ninf = roundtrip(-0.0, 0/0, 1/0, -1/0)
      assert.equal(-1/0, 1/nz)
      assert.is_true(nan ~= nan)
      assert.equal(1/0, inf)
      assert.equal(-1/0, ninf)
    end)

    it("keeps nil among several values", function()
      assert.equal(2, select("#", roundtrip(nil, 2)))
      assert.equal(2, select("#", roundtrip(1, nil)))
      assert.equal(0, select("#", roundtrip()))
    end)

    it("copies strings byte for byte", function()
      local s = "a\0b\255" .. ("x"):rep(100000) .. "\0"
      assert.equal(s, roundtrip(s))
      assert.equal("", roundtrip(""))
    end)

    -- The decoder keeps strings of up to 16 bytes in a cache per state
    -- (lcodec.c, "Short strings"), compared by two words and the length:
    -- every length around those words, strings one byte apart, the same
    -- byte repeated to lengths one apart ("bb", "bbb"), NUL bytes, and more
    -- distinct strings than the cache holds.  Each string travels three
    -- times in one message (the first decode makes it the candidate of its
    -- set, the second caches it, the third is a hit), its one-byte-apart
    -- neighbours right after it (so they meet it in the cache), and the
    -- rounds repeat with the cache full.  In the main state and in a
    -- task's shard.
    it("keeps short strings exact through the decoder's cache", function()
      local strs = {}
      for len = 1, 18 do
        local b = {}
        for i = 1, len do b[i] = string.char((i * 37 + len) % 256) end
        local s = table.concat(b)
        strs[#strs + 1] = s
        for pos = 1, len do strs[#strs + 1] = s:sub(1, pos - 1) .. "\0" .. s:sub(pos + 1) end
        strs[#strs + 1] = ("b"):rep(len)
      end
      for i = 1, 1000 do strs[#strs + 1] = "k" .. i end
      local function check(list, rt)
        for _ = 1, 4 do
          for _, s in ipairs(list) do
            local a, b, c = rt(s, s, s)
            if a ~= s or b ~= s or c ~= s then
              error(("%q came back as %q, %q, %q"):format(s, a, b, c))
            end
          end
          local t = rt(list)
          for i, s in ipairs(list) do
            if t[i] ~= s then error(("%q came back as %q in a table"):format(s, t[i])) end
          end
        end
        return #list
      end
      assert.equal(#strs, check(strs, roundtrip))
      assert.equal(#strs, braid.go(function(list)
        return check(list, require("braid")._roundtrip)
      end, strs):await())
    end)
  end)

  describe("tables", function()
    it("copies nested tables with every kind of key", function()
      local t = {id = 1, name = "San Francisco", temp = 288.9, tags = {"a", "b"},
                 [1.5] = "f", [true] = "T", [-3] = "neg", [0] = "zero", [10] = "ten",
                 nested = {a = {b = {c = "deep"}}}}
      local c = roundtrip(t)
      assert.are_not.equal(t, c)
      assert.same(t, c)
      assert.equal("integer", math.type(c.id))
    end)

    it("keeps holes in arrays", function()
      local c = roundtrip({1, nil, 3, nil, 5})
      assert.equal(1, c[1]); assert.is_nil(c[2]); assert.equal(3, c[3]); assert.equal(5, c[5])
    end)

    it("preserves shared references and cycles", function()
      local shared = {v = 1}
      local t = {a = shared, b = shared, list = {shared}}
      t.self = t
      local k = {}
      t[k] = k
      local c = roundtrip(t)
      assert.equal(c.a, c.b)
      assert.equal(c.a, c.list[1])
      assert.equal(c, c.self)
      assert.are_not.equal(shared, c.a)
      local keys = 0
      for key, v in pairs(c) do
        if type(key) == "table" then keys = keys + 1; assert.equal(key, v) end
      end
      assert.equal(1, keys)
    end)

    it("keeps one table passed twice as one table", function()
      local t = {}
      local a, b = roundtrip(t, t)
      assert.equal(a, b)
    end)

    it("does not copy metatables", function()
      local c = roundtrip(setmetatable({x = 1}, {__index = function() return "mt" end}))
      assert.is_nil(getmetatable(c))
      assert.is_nil(c.y)
    end)

    it("makes a distinct copy every time", function()
      local t = {1}
      local a, b = roundtrip(t), roundtrip(t)
      assert.are_not.equal(a, b)
      a[1] = 2
      assert.equal(1, t[1])
      assert.equal(1, b[1])
      -- Functions too, even one without upvalues (API.md: every transfer
      -- is a distinct copy).
      local f = function(x) return x * 2 end
      local f1, f2 = roundtrip(f), roundtrip(f)
      assert.are_not.equal(f1, f2)
      assert.are_not.equal(f, f1)
      assert.equal(6, f1(3))
    end)

    -- Many string keys, alike and not (short, long, with NUL bytes), in a
    -- table presized from the counts the encoder recorded (wire.h).
    it("decodes many string keys into a presized table", function()
      local keys = { "", "a", "b", "id", "di", "name", "nmae", "x\0y", "x\0z",
                     string.rep("k", 22), string.rep("k", 23), string.rep("k", 200) }
      for i = 1, 300 do keys[#keys + 1] = "key" .. i end
      for round = 1, 3 do
        collectgarbage()
        local t = {}
        for i, k in ipairs(keys) do t[k] = i * round end
        local c = roundtrip(t)
        local n = 0
        for k, v in pairs(c) do
          n = n + 1
          assert.equal(t[k], v)
        end
        assert.equal(#keys, n)
        for i, k in ipairs(keys) do assert.equal(i * round, c[k]) end
      end
    end)

    it("keeps strings equal to keys apart from the keys", function()
      local c = roundtrip({ id = "id", [1] = "name", name = { "id", name = "name" } })
      assert.same({ id = "id", [1] = "name", name = { "id", name = "name" } }, c)
    end)
  end)

  describe("functions", function()
    it("copies a Lua function with its upvalues", function()
      local n, t = 40, {k = "v"}
      local f = roundtrip(function(x) return n + x, t.k end)
      local a, b = f(2)
      assert.equal(42, a)
      assert.equal("v", b)
    end)

    it("copies upvalues by value", function()
      local count = 0
      local function inc() count = count + 1; return count end
      local c = roundtrip(inc)
      assert.equal(1, c())
      assert.equal(0, count)
    end)

    it("keeps recursion and upvalues shared between functions in one value", function()
      local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
      local count = 0
      local t = roundtrip({fact = fact, inc = function() count = count + 1 end,
                           get = function() return count end})
      assert.equal(3628800, t.fact(10))
      t.inc(); t.inc()
      assert.equal(2, t.get())
      assert.equal(0, count)
    end)

    it("rebinds _ENV to the receiver's globals", function()
      rawset(_G, "braid_codec_probe", "global")
      local function make()
        local _ENV = {braid_codec_probe = "private"}
        return function() return braid_codec_probe end
      end
      local f = make()
      assert.equal("private", f())
      local g = roundtrip(f)
      assert.equal("global", g())
      local name, env = debug.getupvalue(g, 1)
      assert.equal("_ENV", name)
      assert.equal(_G, env)
      rawset(_G, "braid_codec_probe", nil)
    end)

    it("keeps line information for tracebacks", function()
      local f = load("local x = 1\nreturn function() error('boom') end", "@task.lua")()
      local ok, err = pcall(roundtrip(f))
      assert.is_false(ok)
      assert.truthy(err:find("task.lua:2: boom", 1, true))
    end)
  end)

  -- The second and later transfers of one function into a state share its
  -- loaded prototype (lcodec.c, "Loaded functions"): every copy must still
  -- be a distinct closure with upvalues of its own.
  describe("functions sent again (the decoder's prototype cache)", function()
    local run_script = require("tests.lua.helpers").run_script

    local function copies(f, n)
      local out = {}
      for i = 1, n or 4 do out[i] = roundtrip(f) end
      return out
    end

    it("gives a distinct closure every time", function()
      local cs = copies(function() return 42 end, 5)
      for i = 1, 5 do
        assert.equal(42, cs[i]())
        for j = i + 1, 5 do assert.is_false(rawequal(cs[i], cs[j])) end
      end
    end)

    it("gives every copy upvalues of its own", function()
      local count = 10
      local function inc(k) count = count + (k or 1); return count end
      local cs = copies(inc, 4)
      assert.equal(11, cs[1]())
      assert.equal(12, cs[1]())
      assert.equal(15, cs[2](5))
      assert.equal(11, cs[3]())
      assert.equal(13, cs[4](3))
      assert.equal(13, cs[1]())
      assert.equal(10, count)
      assert.is_false(debug.upvalueid(cs[1], 1) == debug.upvalueid(cs[2], 1))
    end)

    it("keeps upvalues shared within one copy and recursion", function()
      local n = 0
      local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
      local v = {inc = function() n = n + 1 end, get = function() return n end, fact = fact}
      local ts = copies(v, 3)
      ts[1].inc(); ts[1].inc(); ts[2].inc()
      assert.equal(2, ts[1].get())
      assert.equal(1, ts[2].get())
      assert.equal(0, ts[3].get())
      for i = 1, 3 do assert.equal(3628800, ts[i].fact(10)) end
      assert.is_true(debug.upvalueid(ts[1].inc, 1) == debug.upvalueid(ts[1].get, 1))
      assert.is_false(debug.upvalueid(ts[1].inc, 1) == debug.upvalueid(ts[2].get, 1))
    end)

    it("keeps constants of every kind, parameters, varargs and nested functions", function()
      local long = string.rep("long string constant ", 4)
      local function f(a, b, ...)
        local k = {nil, false, true, 7, -2^63 // 1, 2.5, "short", long}
        local inner = function(x) return function() return x .. "!" end end
        return a + b, select("#", ...), k[2], k[3], k[4], k[5], k[6], k[7], k[8], inner("in")()
      end
      for _, g in ipairs(copies(f, 3)) do
        local r = {g(1, 2, "x", nil, "z")}
        assert.same({3, 3, false, true, 7, math.mininteger, 2.5, "short", long, "in!"}, r)
        assert.is_true(math.type(r[5]) == "integer" and math.type(r[7]) == "float")
      end
    end)

    it("rebinds _ENV, and keeps names, source and lines", function()
      rawset(_G, "braid_codec_probe2", "global")
      local f = load("local up = 5\nreturn function()\n  return braid_codec_probe2, up, error('at line 3')\nend",
                     "@cached.lua")()
      for _, g in ipairs(copies(f, 3)) do
        local ok, err = pcall(g)
        assert.is_false(ok)
        assert.truthy(err:find("cached.lua:3: at line 3", 1, true))
        local info = debug.getinfo(g, "S")
        assert.equal("@cached.lua", info.source)
        assert.equal(2, info.linedefined)
        assert.equal("_ENV", (debug.getupvalue(g, 1)))
        assert.equal(_G, select(2, debug.getupvalue(g, 1)))
        assert.equal("up", (debug.getupvalue(g, 2)))
      end
      rawset(_G, "braid_codec_probe2", nil)
    end)

    it("handles 200 upvalues", function()
      local names, sum = {}, 0
      for i = 1, 200 do names[i] = "u" .. i; sum = sum + i end
      local src = "local " .. table.concat(names, ", ") .. " = " ..
        table.concat((function() local v = {} for i = 1, 200 do v[i] = tostring(i) end return v end)(), ", ") ..
        "\nreturn function() return " .. table.concat(names, " + ") .. " end"
      local f = assert(load(src))()
      for _, g in ipairs(copies(f, 3)) do assert.equal(sum, g()) end
    end)

    it("loads a function without a source (from a stripped dump) the plain way", function()
      local f = load(string.dump(function(x) return x * 2 end, true), "=stripped", "b")
      for _, g in ipairs(copies(f, 3)) do assert.equal(14, g(7)) end
    end)

    it("stays exact when many different functions pass the cache", function()
      local fs = {}
      for i = 1, 300 do fs[i] = assert(load("local k = " .. i .. " return function(x) return x + k end"))() end
      for round = 1, 3 do
        for i = 1, 300, 7 do assert.equal(i + round, roundtrip(fs[i])(round)) end
      end
    end)

    it("works under a line hook (the copier has line information)", function()
      local up = 3
      local f = function(x) return x * up end
      local lines = 0
      debug.sethook(function() lines = lines + 1 end, "l")
      local ok, r = pcall(function()
        local s = 0
        for _ = 1, 4 do s = s + roundtrip(f)(2) end
        return s
      end)
      debug.sethook()
      assert.is_true(ok, r)
      assert.equal(24, r)
      assert.is_true(lines > 0)
    end)

    -- One worker, preempt_ms 1: the task `spin` (Lua source of a function
    -- of the channel) loops until the channel holds a value, which a second
    -- task sends only if `spin` is preempted; returns what spin returned.
    local function preempted(spin)
      return run_script([[
        local braid = require "braid"
        braid.config{workers = 1, preempt_ms = 1}
        local ch = braid.chan(1)
        local spin = braid.go(]] .. spin .. [[, ch)
        braid.go(function() ch:send(true) end)
        io.write(tostring(spin:await()))
      ]])
    end

    it("lets preemption stop a task that decodes functions without end", function()
      -- It decodes a cached function in every iteration, so it is often
      -- preempted while a copier runs, which the hook lets finish.
      assert.equal("true", preempted([[function(ch)
        local up = 40
        local g = function() return up + 2 end
        local n = 0
        while #ch == 0 and n < 20000000 do
          n = n + 1
          assert(braid._roundtrip(g)() == 42)
        end
        return #ch == 1 and n > 1
      end]]))
    end)

    it("still preempts user code that names its chunk like the copier", function()
      assert.equal("true", preempted([[function(ch)
        local loop = load("local ch = ... local n = 0 " ..
          "while #ch == 0 and n < 300000000 do n = n + 1 end return n", "=(braid copy)")
        return loop(ch) < 300000000
      end]]))
    end)
  end)

  describe("modules and standard functions", function()
    it("sends loaded modules and their C functions by name", function()
      local s, sq, p, g, b = roundtrip(string, math.sqrt, print, _G, braid)
      assert.equal(string, s)
      assert.equal(math.sqrt, sq)
      assert.equal(print, p)
      assert.equal(_G, g)
      assert.equal(braid, b)
    end)

    it("lets a function capture a module", function()
      local fmt = string.format
      local f = roundtrip(function(x) return fmt("%d!", x), braid end)
      local s, b = f(3)
      assert.equal("3!", s)
      assert.equal(braid, b)
    end)

    it("notices a module loaded after the first transfer", function()
      roundtrip({})
      package.preload["braid_codec_test_mod"] = function() return {name = "m"} end
      local m = require "braid_codec_test_mod"
      assert.equal(m, roundtrip(m))
      package.loaded["braid_codec_test_mod"] = nil
      package.preload["braid_codec_test_mod"] = nil
    end)
  end)

  describe("handles", function()
    it("sends a channel as the same channel", function()
      local ch = braid.chan(1)
      local c, t = roundtrip(ch, {ch, ch})
      assert.equal(tostring(ch), tostring(c))
      assert.is_true(ch == c)
      assert.is_true(rawequal(c, t[1]) and rawequal(c, t[2]))
    end)
  end)

  describe("untransferable values", function()
    it("names the userdata and its path", function()
      assert.equal("braid: cannot transfer userdata (FILE*) at value[2].conn: open it inside the task, or pass a braid handle", errof(1, {conn = io.stdout}))
    end)

    it("names a coroutine", function()
      assert.equal("braid: cannot transfer thread at value[1]: a coroutine stays in the task that made it; send a channel instead", errof({coroutine.create(print)}))
    end)

    it("names a foreign C function", function()
      assert.equal("braid: cannot transfer C function at value: only the standard library's and loaded modules' C functions travel", errof(coroutine.wrap(print)))
    end)

    it("names a captured variable", function()
      local db = io.stdout
      assert.equal("braid: cannot transfer userdata (FILE*) at value upvalue 'db': open it inside the task, or pass a braid handle",
                   errof(function() return db end))
      local t = {handler = function() return db end}
      assert.equal("braid: cannot transfer userdata (FILE*) at value.handler upvalue 'db': open it inside the task, or pass a braid handle", errof(t))
    end)

    it("quotes keys that are not names", function()
      assert.equal('braid: cannot transfer userdata (FILE*) at value["a b"][1.5][true]: open it inside the task, or pass a braid handle',
                   errof({["a b"] = {[1.5] = {[true] = io.stdout}}}))
      assert.equal("braid: cannot transfer userdata (FILE*) at value.x (in a key): open it inside the task, or pass a braid handle",
                   errof({x = {[io.stdout] = 1}}))
    end)

    it("still works after a failed transfer", function()
      errof({io.stdout})
      assert.same({1, {2}}, roundtrip({1, {2}}))
    end)
  end)
end)
