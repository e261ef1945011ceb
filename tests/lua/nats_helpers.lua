-- tests/lua/nats_helpers.lua: a nats-server of a test's own.
--   local N = require "tests.lua.nats_helpers"
--   local srv = N.start()          -- nil, why when nats-server is missing
--   srv.url, srv.port, srv.pid; srv:restart(); srv:stop()
-- The server listens on 127.0.0.1 only, on a free port (-p -1: the server
-- picks one, read back from its log), with JetStream in a temp dir; it is
-- stopped by its PID (SIGTERM, then SIGKILL) and every wait is bounded.
local braid = require "braid"

local M = {}

-- $NATS_SERVER, else the first of these that exists (Debian installs it
-- in /usr/sbin).
local function find()
  local env = os.getenv("NATS_SERVER")
  if env and env ~= "" then return env end
  for _, p in ipairs({ "/usr/sbin/nats-server", "/usr/bin/nats-server",
                       "/usr/local/bin/nats-server" }) do
    local f = io.open(p, "r")
    if f then f:close() return p end
  end
  return "nats-server"
end
M.BIN = find()

function M.available()
  local f = io.open(M.BIN, "r")
  if f then f:close() return true end
  return false
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end
M.sh = sh

local function alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end
M.alive = alive

local Server = {}
Server.__index = Server

local function launch(self, port)
  local log = self.dir .. "/server.log"
  os.remove(log)
  -- (env -u: a sanitizer pass preloads its runtime; not for the server)
  local cmd = ("env -u LD_PRELOAD %s -a 127.0.0.1 -p %s -js -sd %s/js > %s 2>&1 & echo $!")
    :format(M.BIN, tostring(port), self.dir, log)
  self.pid = assert(tonumber(sh(cmd):match("%d+")), "nats-server did not start")
  local deadline = braid.now() + 10
  while braid.now() < deadline do
    local f = io.open(log, "r")
    local text = f and f:read("a") or ""
    if f then f:close() end
    local p = text:match("Listening for client connections on 127%.0%.0%.1:(%d+)")
    if p and text:find("Server is ready", 1, true) then
      self.port = tonumber(p)
      self.url = "nats://127.0.0.1:" .. p
      return self
    end
    if not alive(self.pid) then break end
    braid.sleep(0.02)
  end
  local f = io.open(log, "r")
  local text = f and f:read("a") or "(no log)"
  if f then f:close() end
  self:kill()
  error("nats-server did not come up: " .. text)
end

-- Whether this process can start others (io.popen): not under a
-- sanitizer's preloaded runtime, where the shell it runs dies.
function M.can_spawn()
  local ok, p = pcall(io.popen, "echo ok")
  if not ok or not p then return false end
  local out = p:read("a")
  p:close()
  return out == "ok\n"
end

-- A server started for us (scripts/nats_fixture.sh, a sanitizer pass's
-- ctest fixture: $BRAID_NATS_FIXTURE/url): not ours to stop or restart.
local function fixture()
  local dir = os.getenv("BRAID_NATS_FIXTURE")
  if not dir or dir == "" then return nil end
  local f = io.open(dir .. "/url", "r")
  if not f then return nil end
  local url = f:read("l")
  f:close()
  local port = url and tonumber(url:match(":(%d+)$"))
  if not port then return nil end
  return { url = url, port = port, external = true,
           stop = function() end,
           restart = function() error("nats_helpers: the fixture's server cannot restart") end }
end

function M.start()
  local fx = fixture()
  if fx and not M.can_spawn() then return fx end
  if not M.available() then return nil, M.BIN .. " not found" end
  local dir = sh("mktemp -d /tmp/braid-nats-XXXXXX"):gsub("%s+$", "")
  return launch(setmetatable({ dir = dir }, Server), -1)
end

-- Stops the process (SIGTERM, SIGKILL after 5 s) and waits until it is gone.
function Server:kill()
  if not self.pid then return end
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  local deadline = braid.now() + 5
  while alive(self.pid) and braid.now() < deadline do braid.sleep(0.02) end
  if alive(self.pid) then os.execute("kill -9 " .. self.pid .. " 2>/dev/null") end
  -- The shell's child: reap it if it became a zombie of ours (it is not:
  -- the `&` shell exited, so init reaps it).
  self.pid = nil
end

-- Stops the server and starts it again on the same port (and store).
function Server:restart()
  local port = self.port
  self:kill()
  return launch(self, port)
end

function Server:stop()
  self:kill()
  if self.dir and self.dir:match("^/tmp/braid%-nats%-") then
    os.execute("rm -rf " .. self.dir)
  end
end

-- A mutex-and-peak counter any task can use: a one-slot channel holding
-- {cur, peak}.
function M.counter()
  local c = braid.chan(1)
  c:send({ cur = 0, peak = 0 })
  return c
end

function M.enter(c)
  local s = c:recv()
  s.cur = s.cur + 1
  if s.cur > s.peak then s.peak = s.cur end
  c:send(s)
end

function M.leave(c)
  local s = c:recv()
  s.cur = s.cur - 1
  c:send(s)
end

function M.peak(c)
  local s = c:recv()
  c:send(s)
  return s.peak
end

return M
