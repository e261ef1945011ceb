#!/usr/bin/env python3
"""Drives the braid REPL under a pseudo-terminal (used by repl.sh).

usage: repl_pty.py BRAID_BIN

Starts BRAID_BIN on a fresh pty (so readline, line editing and Ctrl-C work
as for a person at a terminal), types lines, and checks what comes back.
Every check prints "ok - <what>" or "FAIL - <what>" with the output seen;
the exit status is the number of failures (0: all passed).
"""
import os
import pty
import re
import select
import signal
import sys
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


class Repl:
    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: the pty is its controlling terminal
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.buf = b""     # everything not consumed by an expect yet
        self.log = b""     # everything, for failure reports

    def send(self, text):
        os.write(self.fd, text.encode())

    def line(self, text):
        self.send(text + "\r")

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            raise EOFError
        data = ANSI.sub(b"", data).replace(b"\r", b"")
        self.buf += data
        self.log += data
        return True

    def expect(self, pattern, timeout=5.0):
        """Waits until pattern (a regex on the text so far) matches;
        consumes the text up to the match end.  Returns the match or None."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self._read(left)
            except EOFError:
                m = rx.search(self.buf)
                if m:
                    self.buf = self.buf[m.end():]
                return m

    def drain(self, quiet=0.2):
        """Reads until nothing comes for `quiet` seconds; returns the text."""
        try:
            while self._read(quiet):
                pass
        except EOFError:
            pass
        out, self.buf = self.buf, b""
        return out

    def wait(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                self._read(0.05)
            except EOFError:
                pass
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return None


failures = 0


def check(ok, what, repl=None):
    global failures
    if ok:
        print("ok - " + what)
    else:
        failures += 1
        print("FAIL - " + what)
        if repl is not None:
            print("  output so far:")
            for l in repl.log.decode(errors="replace").splitlines()[-25:]:
                print("  | " + l)
    sys.stdout.flush()
    return ok


PROMPT = r"(?m)^> $"


def main():
    binary = sys.argv[1]
    env = dict(os.environ)
    env.update(TERM="dumb", INPUTRC="/dev/null", LC_ALL="C")
    for k in ("LUA_INIT", "LUA_INIT_5_4"):
        env.pop(k, None)
    r = Repl([binary], env)

    check(r.expect(r"braid \d+\.\d+\.\d+.*Lua 5\.4") is not None,
          "banner names braid and Lua", r)
    check(r.expect(PROMPT) is not None, "first prompt", r)

    r.line("1+1")
    check(r.expect(r"\n2\n> $") is not None, "1+1 prints 2", r)

    r.line("=1+2")
    check(r.expect(r"\n3\n> $") is not None, "=1+2 prints 3", r)

    r.line("return 'a', nil, 3")
    check(r.expect(r"\na\tnil\t3\n> $") is not None,
          "several results print tab-separated", r)

    r.line("for i = 1, 2 do")
    ok = r.expect(r">> $") is not None
    r.line("print(i * 10)")
    ok = ok and r.expect(r">> $") is not None
    r.line("end")
    ok = ok and r.expect(r"\n10\n20\n> $") is not None
    check(ok, "multi-line statement continues with >> and runs once complete", r)

    r.line("local t = {}; t.x = 5; print(t.x)")
    check(r.expect(r"\n5\n> $") is not None, "a statement runs", r)

    r.line("error('oops')")
    m = r.expect(r"oops")
    ok = m is not None and r.expect(r"stack traceback:") is not None
    check(ok, "an error prints its message and a traceback", r)
    check(r.expect(PROMPT) is not None, "the session goes on after an error", r)
    r.line("print('still' .. ' here')")
    check(r.expect(r"\nstill here\n") is not None, "state survives the error", r)
    r.expect(PROMPT)

    # Tab completes names: globals, then fields after '.'.
    r.send("string.fo\t")
    time.sleep(0.2)
    r.line("('%d+%s', 4, 'x')")
    check(r.expect(r"\n4\+x\n> $") is not None,
          "Tab completes string.fo to string.format", r)

    # Completion hides names starting with "_" (braid._box, _meta...)
    # unless the word starts with "_": "t." has one visible field.
    r.line("t = {_secret = 1, public = 2}")
    r.expect(PROMPT)
    r.send("=t.\t")
    time.sleep(0.2)
    r.line("")
    check(r.expect(r"\n2\n> $") is not None,
          "Tab after 't.' completes the one name not starting with '_'", r)
    r.send("=t._\t")
    time.sleep(0.2)
    r.line("")
    check(r.expect(r"\n1\n> $") is not None,
          "Tab after 't._' completes a '_' name when asked for", r)

    r.line("require('braid') == braid")
    check(r.expect(r"\ntrue\n> $") is not None,
          "braid is a global and require returns it", r)

    # Deadlock detection instead of a hang (before any task exists: a
    # sleeping task could still send).
    r.line("braid.chan():recv()")
    check(r.expect(r"deadlock", timeout=5) is not None,
          "recv on a channel nobody can send to reports a deadlock", r)
    r.expect(PROMPT)

    # Ctrl-C while the main thread is blocked in a braid call.
    r.line("braid.sleep(100)")
    time.sleep(0.5)
    t0 = time.monotonic()
    r.send("\x03")
    m = r.expect(r"braid: interrupted", timeout=5)
    took = time.monotonic() - t0
    check(m is not None, "Ctrl-C interrupts braid.sleep(100) with "
          "'braid: interrupted' (%.2fs)" % took, r)
    check(r.expect(PROMPT, timeout=5) is not None,
          "the prompt comes back after the interrupt", r)
    r.line("=40+2")
    check(r.expect(r"\n42\n> $") is not None, "the session goes on after Ctrl-C", r)

    # The same for recv on an empty channel that a live task could still
    # send to (so no deadlock), and for await on a pending future.
    for what, stmt in (
            ("recv", "c = braid.chan(); braid.go(function() braid.sleep(60); c:send(1) end); c:recv()"),
            ("await", "f = braid.go(function() braid.sleep(60) end); f:await()")):
        r.line(stmt)
        time.sleep(0.5)
        r.send("\x03")
        ok = r.expect(r"braid: interrupted", timeout=5) is not None
        ok = ok and r.expect(PROMPT, timeout=5) is not None
        check(ok, "Ctrl-C interrupts a blocked %s and the prompt comes back" % what, r)

    # Ctrl-C while Lua code computes: lua5.4's "interrupted!".
    r.line("while true do end")
    time.sleep(0.3)
    r.send("\x03")
    check(r.expect(r"interrupted!", timeout=5) is not None,
          "Ctrl-C stops a busy Lua loop with 'interrupted!'", r)
    check(r.expect(PROMPT, timeout=5) is not None, "prompt after the busy loop", r)
    # That Ctrl-C must not linger and interrupt the next blocking call.
    r.line("braid.sleep(0.05); print('slept')")
    check(r.expect(r"\nslept\n> $", timeout=5) is not None,
          "no stale interrupt: the next braid.sleep completes", r)

    # Ctrl-C at the prompt drops the line being typed.
    r.send("this is not lua")
    time.sleep(0.2)
    r.send("\x03")
    time.sleep(0.2)
    r.line("=7*6")
    out = r.expect(r"\n42\n> $", timeout=5)
    check(out is not None, "Ctrl-C at the prompt clears the line", r)

    # Ctrl-C under the continuation prompt drops the whole statement.
    r.line("do")
    r.expect(r">> $")
    r.send("\x03")
    time.sleep(0.2)
    r.line("=8")
    check(r.expect(r"\n8\n> $", timeout=5) is not None,
          "Ctrl-C at >> abandons the unfinished statement", r)

    # Tables of records print as aligned tables.
    r.line("{{id=1, name='a', state='x'}, {id=22, name='bbb', state='y'}}")
    ok = r.expect(r"\nid  name  state\n--  ----  -----\n 1  a     x\n22  bbb   y\n\(2 rows\)\n") is not None
    check(ok, "an array of records prints as an aligned table", r)
    r.expect(PROMPT)

    # braid.tasks() with one sleeping task.
    r.line("f = braid.spawn({name = 'sleeper'}, function() braid.sleep(30) end)")
    r.expect(PROMPT)
    r.line("braid.sleep(0.2); return braid.tasks()")
    ok = r.expect(r"\nid +name +state +waiting_on *\n[- ]+\n(.*\n)* *\d+ +sleeper +sleeping +sleep *\n(.*\n)*\(\d+ rows?\)") is not None
    check(ok, "braid.tasks() prints as a table (a sleeping task)", r)
    r.expect(PROMPT)

    # End of input (Ctrl-D) ends the session with status 0, tasks or not.
    r.send("\x04")
    status = r.wait(timeout=10)
    check(status == 0, "Ctrl-D exits with status 0 (got %r)" % (status,), r)

    hist = os.path.join(env.get("HOME", ""), ".braid_history")
    text = open(hist).read() if os.path.exists(hist) else ""
    check("1+1\n" in text and "print(i * 10)" in text,
          "history saved in ~/.braid_history")

    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
