#!/usr/bin/python3
"""loading_proxy.py - a Redis proxy that plays a Redis restart with a
data set still loading, for tests.

Usage: loading_proxy.py LISTEN_SOCK REDIS_SOCK LOADING_SECONDS
Listens on the unix socket LISTEN_SOCK and relays each connection to the
unix socket REDIS_SOCK. On SIGUSR1 every open connection is closed (as a
restarting Redis would), and each connection made after that is answered
"-LOADING ..." to every command for its first LOADING_SECONDS, then
relayed. Writes "ready" to LISTEN_SOCK.ready
once listening. Counts go to stdout at exit (SIGTERM): "loading_replies=N".
"""
import os
import signal
import socket
import sys
import threading
import time

listen_path, redis_path, loading_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
lock = threading.Lock()
conns = []
state = {"restarted": False, "loading_replies": 0}
LOADING = b"-LOADING Redis is loading the dataset in memory\r\n"


def command_len(buf):
    """Length of the first complete RESP command in buf, or 0."""
    if not buf.startswith(b"*"):
        return 0
    end = buf.find(b"\r\n")
    if end < 0:
        return 0
    n, pos = int(buf[1:end]), end + 2
    for _ in range(n):
        e = buf.find(b"\r\n", pos)
        if e < 0 or buf[pos:pos + 1] != b"$":
            return 0
        pos = e + 2 + int(buf[pos + 1:e]) + 2
        if pos > len(buf):
            return 0
    return pos


def pump(src, dst):
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(c, loading_until):
    up = socket.socket(socket.AF_UNIX)
    up.connect(redis_path)
    with lock:
        conns.extend([c, up])
    buf = b""
    try:
        while time.time() < loading_until:
            c.settimeout(max(0.01, loading_until - time.time()))
            try:
                d = c.recv(65536)
            except socket.timeout:
                continue
            if not d:
                return
            buf += d
            while True:
                n = command_len(buf)
                if n == 0:
                    break
                buf = buf[n:]
                c.sendall(LOADING)
                with lock:
                    state["loading_replies"] += 1
        c.settimeout(None)
        if buf:
            up.sendall(buf)
    except OSError:
        return
    threading.Thread(target=pump, args=(up, c), daemon=True).start()
    pump(c, up)


def restart(signum, frame):
    with lock:
        state["restarted"] = True
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        conns.clear()


def stop(signum, frame):
    print("loading_replies=%d" % state["loading_replies"], flush=True)
    os._exit(0)


signal.signal(signal.SIGUSR1, restart)
signal.signal(signal.SIGTERM, stop)
ls = socket.socket(socket.AF_UNIX)
ls.bind(listen_path)
ls.listen(64)
with open(listen_path + ".ready", "w") as f:
    f.write("ready\n")
while True:
    c, _ = ls.accept()
    with lock:
        until = time.time() + loading_s if state["restarted"] else 0
    threading.Thread(target=serve, args=(c, until), daemon=True).start()
