#!/usr/bin/python3
"""hostile_peer.py - a scriptable misbehaving SMTP receiver for tests.

Usage: hostile_peer.py PORTFILE RECORDFILE MODE
Listens on 127.0.0.1:0, writes its port to PORTFILE, appends one line per
accepted message ("<mail from> <rcpts> <bytes>") to RECORDFILE.
The first connection misbehaves according to MODE; later ones are correct.
  malformed-mail   answer MAIL FROM with a malformed reply "2x0 what"
  drop-after-dot   close the connection after the final dot, no reply
  drop-greeting    close right after the greeting
  garbage-greeting greet with a line that is not SMTP
"""
import socket
import sys
import threading

portfile, recfile, mode = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
conn_no = [0]


def serve(c, first):
    try:
        serve_session(c, first)
    except OSError:
        pass  # the client hung up on a misbehaving peer: expected


def serve_session(c, first):
    f = c.makefile("rb")
    out = lambda s: c.sendall(s.encode())
    if first and mode == "garbage-greeting":
        out("HELLO THERE\r\n")
        c.close()
        return
    out("220 hostile.test ESMTP\r\n")
    if first and mode == "drop-greeting":
        c.close()
        return
    mail, rcpts = None, []
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.decode("latin-1").rstrip("\r\n")
        u = cmd.upper()
        if u.startswith("EHLO"):
            out("250-hostile.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif u.startswith("HELO"):
            out("250 hostile.test\r\n")
        elif u.startswith("MAIL FROM:"):
            if first and mode == "malformed-mail":
                out("2x0 what\r\n")
                continue
            mail, rcpts = cmd[10:], []
            out("250 2.1.0 ok\r\n")
        elif u.startswith("RCPT TO:"):
            rcpts.append(cmd[8:])
            out("250 2.1.5 ok\r\n")
        elif u == "DATA":
            out("354 go ahead\r\n")
            n = 0
            while True:
                l = f.readline()
                if not l:
                    return
                if l == b".\r\n":
                    break
                n += len(l)
            if first and mode == "drop-after-dot":
                c.close()
                return
            with lock, open(recfile, "a") as r:
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
s.bind(("127.0.0.1", 0))
s.listen(64)
with open(portfile + ".tmp", "w") as p:
    p.write(str(s.getsockname()[1]))
import os
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = s.accept()
    with lock:
        conn_no[0] += 1
        first = conn_no[0] == 1
    threading.Thread(target=serve, args=(c, first), daemon=True).start()
