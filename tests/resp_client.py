"""resp_client.py - a small RESP client for the test drivers.

Redis(path).cmd("XRANGE", key, "-", "+") sends one command over the Unix
socket at path and returns its reply: a list for an array, str for a bulk
or simple string, int for an integer, None for a nil. An error reply ends
the test driver (SystemExit). Field values come back exactly as stored,
which redis-cli's output does not promise (newlines, quoting).
"""
import socket


class Redis:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def cmd(self, *args):
        data = [x.encode() for x in args]
        self.sock.sendall(b"*%d\r\n" % len(data) +
                          b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in data))
        return self._read()

    def _read(self):
        line = self.file.readline()
        t, v = line[:1], line[1:-2]
        if t == b"*":
            return None if int(v) < 0 else [self._read() for _ in range(int(v))]
        if t == b"$":
            return None if int(v) < 0 else self.file.read(int(v) + 2)[:-2].decode()
        if t == b":":
            return int(v)
        if t == b"+":
            return v.decode()
        raise SystemExit("redis: " + v.decode())
