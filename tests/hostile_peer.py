#!/usr/bin/python3
"""hostile_peer.py - a scriptable misbehaving SMTP receiver for tests.

Usage: hostile_peer.py PORTFILE RECORDFILE MODE [key=value ...]
Listens on 127.0.0.1:0, writes its port to PORTFILE, appends one line per
accepted message ("<mail from + params> <rcpts> <bytes>") to RECORDFILE.
The first connection misbehaves according to MODE; later ones are correct
(unless always=1).
  none                 behave (use with the options below)
  malformed-mail       answer MAIL FROM with a malformed reply "2x0 what"
  drop-after-dot       close the connection after the final dot, no reply
  drop-greeting        close right after the greeting
  garbage-greeting     greet with a line that is not SMTP
  no-ehlo              answer EHLO with 502 (the client falls back to HELO)
  split-bytes          send every reply one byte per write (all connections)
  slow-replies         wait delay= seconds before every reply (all connections)
  mismatch-multiline   EHLO reply whose lines carry different codes
  long-line            EHLO reply with a line over 2048 bytes
  garbage-pipelining   a line of garbage before the 250 to MAIL
  reset-in-data        reset the connection (RST) in the middle of the body
  silent-after-greeting  greet, then read and never answer
  silent-at-data       never answer the DATA command (no 354)
  silent-after-dot     read the whole body, never answer the final dot
  never-greet          accept and say nothing
  slow-reader          after 354, read the body 1 KB per 0.1 s (small
                       receive buffer, so the sender feels it)
Options:
  caps=PIPELINING,8BITMIME,...  EHLO keywords (default PIPELINING,8BITMIME,SIZE:20000000;
                       "SIZE 1000" as SIZE:1000)
  max_rcpts=N          answer 452 4.5.3 to RCPTs past N in a transaction
  always=1             every connection misbehaves, not only the first
  delay=S              seconds for slow-replies (default 0.2)
"""
import os
import socket
import struct
import sys
import threading
import time

portfile, recfile, mode = sys.argv[1], sys.argv[2], sys.argv[3]
opts = dict(a.split("=", 1) for a in sys.argv[4:])
caps = [c.replace(":", " ") for c in opts.get("caps", "PIPELINING,8BITMIME,SIZE:20000000").split(",") if c]
max_rcpts = int(opts.get("max_rcpts", "0"))
always = opts.get("always") == "1"
delay = float(opts.get("delay", "0.2"))
lock = threading.Lock()
conn_no = [0]


def serve(c, first):
    try:
        serve_session(c, first)
    except OSError:
        pass  # the client hung up on a misbehaving peer: expected


def drain(f):
    """Read and discard until the client closes."""
    while f.read(4096):
        pass


def serve_session(c, first):
    f = c.makefile("rb")
    bad = first or always

    def out(s):
        if mode == "slow-replies":
            time.sleep(delay)
        if mode == "split-bytes":
            for ch in s.encode():
                c.sendall(bytes([ch]))
        else:
            c.sendall(s.encode())

    if bad and mode == "never-greet":
        drain(f)
        return
    if bad and mode == "garbage-greeting":
        out("HELLO THERE\r\n")
        c.close()
        return
    out("220 hostile.test ESMTP\r\n")
    if bad and mode == "drop-greeting":
        c.close()
        return
    if bad and mode == "silent-after-greeting":
        drain(f)
        return
    mail, rcpts = None, []
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.decode("utf-8", "replace").rstrip("\r\n")
        u = cmd.upper()
        if u.startswith("EHLO"):
            if bad and mode == "no-ehlo":
                out("502 5.5.2 EHLO not implemented\r\n")
                continue
            if bad and mode == "mismatch-multiline":
                out("250-hostile.test\r\n251 PIPELINING\r\n")
                continue
            if bad and mode == "long-line":
                out("250-hostile.test\r\n250-X-" + "x" * 3000 + "\r\n250 PIPELINING\r\n")
                continue
            lines = ["hostile.test"] + caps
            out("".join("250%s%s\r\n" % ("-" if i + 1 < len(lines) else " ", l)
                        for i, l in enumerate(lines)))
        elif u.startswith("HELO"):
            out("250 hostile.test\r\n")
        elif u.startswith("MAIL FROM:"):
            if bad and mode == "malformed-mail":
                out("2x0 what\r\n")
                continue
            mail, rcpts = cmd[10:], []
            if bad and mode == "garbage-pipelining":
                out("this is not a reply\r\n250 2.1.0 ok\r\n")
                continue
            out("250 2.1.0 ok\r\n")
        elif u.startswith("RCPT TO:"):
            if max_rcpts and len(rcpts) >= max_rcpts:
                out("452 4.5.3 too many recipients\r\n")
                continue
            rcpts.append(cmd[8:])
            out("250 2.1.5 ok\r\n")
        elif u == "DATA":
            if not rcpts:
                out("554 5.5.1 no valid recipients\r\n")
                continue
            if bad and mode == "silent-at-data":
                drain(f)
                return
            if bad and mode == "slow-reader":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            out("354 go ahead\r\n")
            n = 0
            while True:
                if bad and mode == "slow-reader":
                    time.sleep(0.1)
                    if not f.read(1024):
                        return
                    continue
                l = f.readline()
                if not l:
                    return
                if l == b".\r\n":
                    break
                n += len(l)
                if bad and mode == "reset-in-data" and n > 100:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                    return
            if bad and mode == "drop-after-dot":
                c.close()
                return
            if bad and mode == "silent-after-dot":
                drain(f)
                return
            with lock, open(recfile, "a", encoding="utf-8") as r:
                r.write("%s %s %d\n" % (mail, ",".join(rcpts), n))
            out("250 2.0.0 queued\r\n")
        elif u == "RSET":
            out("250 2.0.0 ok\r\n")
        elif u == "QUIT":
            out("221 2.0.0 bye\r\n")
            c.close()
            return
        else:
            out("502 5.5.2 unknown\r\n")


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if mode == "slow-reader":
    # Set before listen so the window is small from the handshake on.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind(("127.0.0.1", 0))
s.listen(64)
with open(portfile + ".tmp", "w") as p:
    p.write(str(s.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = s.accept()
    with lock:
        conn_no[0] += 1
        first = conn_no[0] == 1
    threading.Thread(target=serve, args=(c, first), daemon=True).start()
