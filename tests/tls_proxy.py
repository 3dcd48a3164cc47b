#!/usr/bin/python3
"""tls_proxy.py - a STARTTLS man in the middle for tern's tests.

Usage: tls_proxy.py --listen-port-file FILE --upstream HOST:PORT
                    --mode strip|inject [--log FILE]

Listens on 127.0.0.1 port 0, writes the port to FILE (temp file + rename)
and relays every connection to the upstream SMTP receiver, reading the
plaintext part of the session line by line.

Modes:
  strip   removes the STARTTLS line from every reply (the EHLO reply stays a
          well-formed multiline reply) and answers a STARTTLS the client
          sends anyway with "502 5.5.1 not implemented" itself.
  inject  forwards STARTTLS, then writes "250 injected" in plaintext right
          behind the upstream's 220, in the same write, before the TLS
          handshake; after that it relays bytes both ways untouched.

--log FILE gets one line per DATA or BDAT command the client sent in
plaintext: "conn=N DATA from=<sender> rcpt=<a>,<b>" (BDAT likewise, once per
transaction), so a test can prove a message never passed in plaintext.
Connections are logged on stderr. SIGTERM stops the proxy (exit 0).
"""
import argparse
import asyncio
import os
import signal
import sys

INJECTED = b"250 injected\r\n"
STRIP_REPLY = b"502 5.5.1 not implemented\r\n"
# asyncio's StreamReader line limit; SMTP lines are far shorter (RFC 5321
# 4.5.3.1.6: 1000 octets for text lines), a longer one ends the session.
LINE_MAX = 64 * 1024
RELAY_CHUNK = 16 * 1024


def log(msg):
    print("tls_proxy: " + msg, file=sys.stderr, flush=True)


def reply_code(line):
    return line[:3]


def is_last_line(line):
    """A reply's last line has a space (or nothing) after the code."""
    return line[3:4] != b"-"


def first_word(text):
    """The address of a MAIL/RCPT argument, without its parameters."""
    words = text.split()
    return words[0] if words else ""


def strip_starttls(lines):
    """The reply's lines without STARTTLS, separators rebuilt so the last
    kept line is the final one. The first line is a reply's text (in EHLO:
    the server's name), never a keyword, so it always stays."""
    kept = lines[:1] + [l for l in lines[1:] if l[4:].strip().upper() != b"STARTTLS"]
    out = []
    for i, l in enumerate(kept):
        sep = b" " if i == len(kept) - 1 else b"-"
        out.append(l[:3] + sep + l[4:])
    return b"".join(out)


class Session:
    """One relayed connection. The plaintext phase is parsed so the proxy
    knows commands from message bodies; `pending` counts replies the client
    still waits for, so a locally answered STARTTLS keeps reply order."""

    def __init__(self, proxy, no, creader, cwriter, ureader, uwriter):
        self.proxy, self.no = proxy, no
        self.cr, self.cw, self.ur, self.uw = creader, cwriter, ureader, uwriter
        self.pending = 1            # the greeting
        self.idle = asyncio.Event()
        self.in_body = False        # between 354 and the final dot
        self.starttls = None        # future: did the upstream say 220?
        self.mail_from, self.rcpts = "", []
        self.bdat_logged = False

    def record_body(self, verb):
        self.proxy.record("conn=%d %s from=%s rcpt=%s" %
                          (self.no, verb, self.mail_from, ",".join(self.rcpts)))

    def reply_done(self):
        self.pending -= 1
        if self.pending <= 0:
            self.idle.set()

    def command_sent(self):
        self.pending += 1
        self.idle.clear()

    async def read_reply(self):
        lines = []
        while True:
            line = await self.ur.readline()
            if not line:
                return None
            lines.append(line)
            if is_last_line(line):
                return lines

    async def upstream_to_client(self):
        while True:
            lines = await self.read_reply()
            if lines is None:
                return
            code = reply_code(lines[0])
            if code == b"354":
                self.in_body = True     # before the client can see the 354
            out = strip_starttls(lines) if self.proxy.mode == "strip" else b"".join(lines)
            answering_starttls = self.starttls is not None and not self.starttls.done()
            if answering_starttls and code == b"220" and self.proxy.mode == "inject":
                out += INJECTED     # one write: the same segment as the 220
                log("conn %d: injected %r behind the 220" % (self.no, INJECTED))
            self.cw.write(out)
            await self.cw.drain()
            self.reply_done()
            if answering_starttls:
                self.starttls.set_result(code == b"220")
                if code == b"220":
                    await relay(self.ur, self.cw)
                    return

    async def client_command(self, line):
        """Handles one plaintext command line; returns False to stop
        parsing (the session switched to TLS)."""
        cmd = line.rstrip(b"\r\n")
        verb = cmd.split(b" ", 1)[0].upper()
        text = cmd.decode("latin-1")
        if verb == b"STARTTLS" and self.proxy.mode == "strip":
            await self.idle.wait()
            self.cw.write(STRIP_REPLY)
            await self.cw.drain()
            log("conn %d: STARTTLS answered 502 (stripped)" % self.no)
            return True
        if verb == b"MAIL":
            self.mail_from, self.rcpts, self.bdat_logged = first_word(text[10:]), [], False
        elif verb == b"RCPT":
            self.rcpts.append(first_word(text[8:]))
        elif verb == b"DATA":
            self.record_body("DATA")
        elif verb == b"BDAT":
            if not self.bdat_logged:
                self.record_body("BDAT")
                self.bdat_logged = True
        if verb == b"STARTTLS":     # before the reply can possibly arrive
            self.starttls = asyncio.get_running_loop().create_future()
        self.command_sent()
        self.uw.write(line)
        if verb == b"BDAT":
            size = int(cmd.split()[1])
            self.uw.write(await self.cr.readexactly(size))
        await self.uw.drain()
        if verb == b"STARTTLS":
            if await self.starttls:
                await relay(self.cr, self.uw)
                return False
            self.starttls = None
        return True

    async def client_to_upstream(self):
        while True:
            line = await self.cr.readline()
            if not line:
                return
            if self.in_body:
                self.uw.write(line)
                await self.uw.drain()
                if line == b".\r\n":
                    self.in_body = False
                    self.command_sent()     # the final reply is due
                continue
            if not await self.client_command(line):
                return

    async def run(self):
        tasks = [asyncio.create_task(self.upstream_to_client()),
                 asyncio.create_task(self.client_to_upstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (self.cw, self.uw):
                w.close()


async def relay(reader, writer):
    """Copies bytes until EOF (the TLS part of an injected session)."""
    while True:
        data = await reader.read(RELAY_CHUNK)
        if not data:
            return
        writer.write(data)
        await writer.drain()


class Proxy:
    def __init__(self, args):
        self.mode = args.mode
        self.upstream = args.upstream.rsplit(":", 1)
        self.logf = open(args.log, "a") if args.log else None
        self.conns = 0

    def record(self, line):
        if self.logf:
            self.logf.write(line + "\n")
            self.logf.flush()

    async def handle(self, creader, cwriter):
        self.conns += 1
        no = self.conns
        peer = cwriter.get_extra_info("peername")
        log("conn %d from %s:%d, mode %s" % (no, peer[0], peer[1], self.mode))
        try:
            ureader, uwriter = await asyncio.open_connection(
                self.upstream[0], int(self.upstream[1]), limit=LINE_MAX)
        except OSError as e:
            log("conn %d: upstream: %s" % (no, e))
            cwriter.close()
            return
        try:
            await Session(self, no, creader, cwriter, ureader, uwriter).run()
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            log("conn %d: %s" % (no, e))    # a client hanging up mid-session
        log("conn %d closed" % no)


async def main():
    ap = argparse.ArgumentParser(description="STARTTLS man in the middle for tests")
    ap.add_argument("--listen-port-file", required=True)
    ap.add_argument("--upstream", required=True, help="HOST:PORT")
    ap.add_argument("--mode", required=True, choices=("strip", "inject"))
    ap.add_argument("--log", help="file for DATA/BDAT commands seen in plaintext")
    args = ap.parse_args()
    proxy = Proxy(args)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, limit=LINE_MAX)
    port = server.sockets[0].getsockname()[1]
    tmp = args.listen_port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, args.listen_port_file)
    log("listening on 127.0.0.1:%d, upstream %s, mode %s" % (port, args.upstream, args.mode))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    log("stopped after %d connections" % proxy.conns)


if __name__ == "__main__":
    asyncio.run(main())
