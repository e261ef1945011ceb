#!/usr/bin/env python3
"""Replays examples/repl.md through the braid REPL (used by repl_md.sh).

usage: repl_md.py BRAID_BIN REPL_MD

The transcript format (see examples/repl.md): inside ```repl fences, a line
starting with "> " is typed at the prompt, one starting with ">> " is a
continuation line of the same statement, and the lines up to the next input
are the output expected from it.  Comparison is per line after collapsing
runs of spaces and tabs to one space and stripping both ends; "..." alone
on a line matches any number of lines, "..." inside a line any text.  All
the blocks of the file are one session.

Prints "ok - <input>" or "FAIL - <input>" (with the expected and actual
output) per step; the exit status is 1 if any step failed.
"""
import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
PROMPT = re.compile(rb"(?:^|\n)(>>?) $")
STEP_TIMEOUT = 10.0


def parse(path):
    """Returns [(input_lines, expected_lines)] from the ```repl blocks."""
    steps, in_block = [], False
    for raw in open(path, encoding="utf-8").read().splitlines():
        if raw.startswith("```"):
            in_block = (not in_block) and raw[3:].strip() == "repl"
            continue
        if not in_block:
            continue
        if raw.startswith("> "):
            steps.append(([raw[2:]], []))
        elif raw.startswith(">> ") and steps and not steps[-1][1]:
            steps[-1][0].append(raw[3:])
        elif steps:
            steps[-1][1].append(raw)
    return steps


def norm(line):
    return re.sub(r"[ \t]+", " ", line).strip()


def matches(expected, actual):
    rx = ""
    for line in expected:
        line = norm(line)
        if line == "...":
            rx += r"(?:[^\n]*\n)*?"
        else:
            rx += ".*?".join(re.escape(p) for p in line.split("...")) + r"\n"
    text = "".join(norm(l) + "\n" for l in actual)
    return re.fullmatch(rx, text) is not None


class Repl:
    def __init__(self, binary, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execve(binary, [binary], env)
            finally:
                os._exit(127)
        # A wide terminal: readline does not scroll long input lines.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
        self.buf = b""

    def read_prompt(self, timeout=STEP_TIMEOUT):
        """Reads until a prompt ends the output; returns (text, prompt)."""
        deadline = time.monotonic() + timeout
        while True:
            m = PROMPT.search(self.buf)
            if m and m.end() == len(self.buf):
                # Nothing more within a moment: it really is the prompt.
                r, _, _ = select.select([self.fd], [], [], 0.05)
                if not r:
                    text = self.buf[:m.start()]
                    self.buf = b""
                    return text.decode(errors="replace"), m.group(1).decode()
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                continue
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                data = b""
            if not data:
                return None, None
            self.buf += ANSI.sub(b"", data).replace(b"\r", b"")

    def line(self, text):
        os.write(self.fd, (text + "\r").encode())


def main():
    binary, md = sys.argv[1], sys.argv[2]
    steps = parse(md)
    if not steps:
        print("FAIL - no ```repl blocks in " + md)
        return 1
    env = dict(os.environ)
    env.update(TERM="dumb", INPUTRC="/dev/null", LC_ALL="C")
    for k in ("LUA_INIT", "LUA_INIT_5_4"):
        env.pop(k, None)
    r = Repl(binary, env)
    banner, prompt = r.read_prompt()
    if prompt != ">":
        print("FAIL - no first prompt; got %r" % (banner,))
        return 1
    failures = 0
    for inputs, expected in steps:
        text = prompt = None
        for i, line in enumerate(inputs):
            r.line(line)
            text, prompt = r.read_prompt()
            if text is None:
                break
            if i < len(inputs) - 1 and prompt != ">>":
                break
        what = " / ".join(inputs)
        if text is None:
            print("FAIL - %s: no prompt within %g s" % (what, STEP_TIMEOUT))
            failures += 1
            break
        lines = text.split("\n")[1:]          # the first line is the echo
        while expected and expected[-1].strip() == "":
            expected = expected[:-1]
        if prompt == ">" and matches(expected, lines):
            print("ok - " + what)
        else:
            failures += 1
            print("FAIL - " + what)
            print("  expected:")
            for l in expected:
                print("  | " + l)
            print("  got (prompt %r):" % prompt)
            for l in lines:
                print("  | " + l)
        sys.stdout.flush()
    os.write(r.fd, b"\x04")                    # Ctrl-D: end the session
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        pid, st = os.waitpid(r.pid, os.WNOHANG)
        if pid:
            status = os.waitstatus_to_exitcode(st)
            break
        try:
            select.select([r.fd], [], [], 0.05)
            os.read(r.fd, 4096)
        except OSError:
            pass
    if status is None:
        os.kill(r.pid, 9)
        os.waitpid(r.pid, 0)
    if status == 0:
        print("ok - Ctrl-D ends the session with status 0")
    else:
        failures += 1
        print("FAIL - Ctrl-D: exit status %r" % (status,))
    print("%d step(s), %d failure(s)" % (len(steps), failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
