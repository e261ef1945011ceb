-- braid.natsservice: the handle nc:serve returns (lua/braid/nats.lua).
--
--   service:stop([timeout]) -> true   unsubscribe at once, let the workers
--                                     finish what they hold, wait for them
--   service:stats() -> {served, buffered}
--
-- A box (braid.handle) holding the connection, the subscription channel
-- and the worker tasks' futures, so that it travels like every handle.
local braid = require "braid"
local H = require "braid.handle"

local M = {}

H.kind(M, "natsservice", { "stop", "stats" }, function(s)
  return (s.ch:is_closed() and "stopped " or "serving ") .. s.subject
end)

function M.new(nc, ch, subject, queue, done)
  return H.new(M, { nc = nc, ch = ch, subject = subject, queue = queue or false, done = done },
    H.id(ch))
end

function M.stop(s, timeout)
  H.check(M, s, "service:stop")
  s.nc:unsubscribe(s.ch)
  local all = braid.all(s.done)
  local ok, err = all:wait(timeout)
  if not ok then return nil, err end
  return true
end

function M.stats(s)
  H.check(M, s, "service:stats")
  local st = s.ch:stats()
  return { served = st.received, buffered = st.len or #s.ch }
end

return M
