#!/usr/bin/python3
"""chunking_peer.py - a plaintext SMTP receiver that offers PIPELINING and
CHUNKING and writes down the client's exact commands, for the BDAT tests.

Usage: chunking_peer.py PORTFILE LOG
Listens on 127.0.0.1:0 and writes its port to PORTFILE. Every command line
goes to LOG as received; after "BDAT <n> [LAST]" the n chunk bytes are read
exactly and logged as one line "CHUNK <hex of the bytes>". A DATA body is
logged as "BODY <hex>" (up to and including the final ".\r\n"). RCPT to a
local part starting with "reject" gets 550; a BDAT or DATA with no accepted
recipient gets 554. Like Exim, a refused BDAT LAST leaves the transaction
open: a MAIL before RSET gets 503, and RCPTs join that transaction. Each
message taken is logged as "ACCEPT <sender> <recipients>". Runs until
SIGTERM.
"""
import os
import signal
import socket
import sys
import threading

portfile, logpath = sys.argv[1], sys.argv[2]
log_lock = threading.Lock()
MAX_LINE = 1000
MAX_CHUNK = 10 * 1024 * 1024


def log(line):
    with log_lock, open(logpath, "a") as f:
        f.write(line + "\n")


def serve(conn):
    f = conn.makefile("rb")
    out = conn.makefile("wb")

    def reply(s):
        out.write((s + "\r\n").encode())
        out.flush()

    reply("220 chunking.test ESMTP")
    rcpts = []
    sender = None
    while True:
        line = f.readline(MAX_LINE)
        if not line:
            return
        cmd = line.rstrip(b"\r\n").decode("latin-1")
        log(cmd)
        verb = cmd.split(" ", 1)[0].upper()
        if verb == "EHLO":
            reply("250-chunking.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING")
        elif verb == "MAIL":
            if sender is not None:
                reply("503 5.5.1 sender already given")
                continue
            sender = cmd[len("MAIL FROM:"):].split(" ", 1)[0]
            rcpts = []
            reply("250 2.1.0 ok")
        elif verb == "RCPT":
            if sender is None:
                reply("503 5.5.1 sender first")
            elif cmd.upper().startswith("RCPT TO:<REJECT"):
                reply("550 5.1.1 no such user")
            else:
                rcpts.append(cmd[len("RCPT TO:"):].split(" ", 1)[0])
                reply("250 2.1.5 ok")
        elif verb == "BDAT":
            n = int(cmd.split()[1])
            if n > MAX_CHUNK:
                return
            data = f.read(n)
            log("CHUNK " + data.hex())
            if rcpts:
                log("ACCEPT %s %s" % (sender, ",".join(rcpts)))
                sender, rcpts = None, []
                reply("250 2.0.0 queued")
            else:
                reply("554 5.5.1 no valid recipients")   # the transaction stays open
        elif verb == "DATA":
            reply("354 go")
            body = b""
            while not body.endswith(b"\r\n.\r\n") and body != b".\r\n":
                chunk = f.readline(MAX_LINE)
                if not chunk:
                    return
                body += chunk
            log("BODY " + body.hex())
            if not rcpts:
                reply("554 5.5.1 no valid recipients")
                continue
            log("ACCEPT %s %s" % (sender, ",".join(rcpts)))
            sender, rcpts = None, []
            reply("250 2.0.0 queued")
        elif verb == "RSET":
            sender, rcpts = None, []
            reply("250 2.0.0 reset")
        elif verb == "QUIT":
            reply("221 2.0.0 bye")
            return
        else:
            reply("502 5.5.2 not here")


def accept_loop(sock):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(16)
with open(portfile + ".tmp", "w") as pf:
    pf.write(str(sock.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
accept_loop(sock)
