-- twitter_http_spec.lua: examples/fake_twitter.lua's HTTP front
-- (fake_twitter.serve / http_get): bearer tokens, 429 with
-- x-rate-limit-reset, max_id pagination.  Over braid.net when present,
-- else over tests/lua/fakenet.lua.
package.path = "examples/?.lua;" .. package.path
local braid = require "braid"
local http = braid.http
local twitter = require "fake_twitter"

describe("fake_twitter over HTTP", function()
  local api, srv, base
  before_each(function()
    if not braid.net then http._net = require("tests.lua.fakenet").new() end
    api = twitter.new({ limit = 3, window = 5 })
    srv = assert(twitter.serve(api, "127.0.0.1:0"))
    base = "http://" .. srv:addr()
  end)
  after_each(function()
    srv:close(1)
    twitter.close(api)
    http._net = nil
  end)

  it("needs a bearer token", function()
    local r = assert(http.get(base .. "/1.1/followers/ids.json?user_id=1&cursor=-1"))
    assert.are.equal(401, r.status)
  end)

  it("answers 429 with x-rate-limit-reset once a token overspends its window", function()
    local hdr = { authorization = "Bearer t1" }
    for _ = 1, 3 do
      local r = assert(http.get(base .. "/1.1/followers/ids.json?user_id=1&cursor=-1", { headers = hdr }))
      assert.are.equal(200, r.status)
    end
    local r = assert(http.get(base .. "/1.1/followers/ids.json?user_id=1&cursor=-1", { headers = hdr }))
    assert.are.equal(429, r.status)
    local reset = tonumber(r.headers["x-rate-limit-reset"])
    assert.is_true(reset > 0 and reset <= 5)
    -- another token is not affected
    r = assert(http.get(base .. "/1.1/followers/ids.json?user_id=1&cursor=-1",
      { headers = { authorization = "Bearer t2" } }))
    assert.are.equal(200, r.status)
  end)

  it("pages a timeline with max_id exactly as the in-process API does", function()
    local cfg = api.cfg
    local want = {}
    for _, id in ipairs(twitter.tweets_of(cfg, 1)) do want[#want + 1] = id end
    local got, max_id, calls = {}, nil, 0
    repeat
      calls = calls + 1
      local r = twitter.http_get(base, "tok-" .. calls, "statuses/user_timeline",
        { user_id = 1, count = cfg.timeline_page, max_id = max_id })
      assert.are.equal(200, r.status)
      for _, t in ipairs(r.tweets) do got[#got + 1] = t.id end
      max_id = r.next_max_id
    until not max_id or calls > 50
    table.sort(want, function(a, b) return a > b end)
    assert.are.same(want, got)
    assert.is_true(calls > 1)
  end)
end)
