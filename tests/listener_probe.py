#!/usr/bin/python3
"""listener_probe.py - hand-written SMTP clients for tests/it_listener.sh.

  listener_probe.py relay PORT USER PASS CAFILE   from 127.0.0.2 (not allowed): every order of
      commands, AUTH before STARTTLS, bad AUTH, BDAT, STARTTLS injection; no MAIL FROM may be
      accepted and no message queued. Prints one "case NAME ok|BAD: why" line per case.
  listener_probe.py smuggle PORT                   from 127.0.0.1 (allowed): DATA bodies with bare
      LF / bare CR end-of-data lookalikes must be refused (554 5.6.0); a clean message after them
      in the same session is accepted.
"""
import socket
import ssl
import sys
import base64

TIMEOUT = 20


def connect(port, src):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(src, 0))
    f = s.makefile("rb")
    return s, f


def read_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            lines.append("EOF")
            return lines
        line = line.decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return lines


def cmd(s, f, line):
    s.sendall(line.encode() + b"\r\n")
    return read_reply(f)


def code(reply):
    return reply[-1][:3]


class Session:
    def __init__(self, port, src="127.0.0.2"):
        self.s, self.f = connect(port, src)
        self.greet = read_reply(self.f)
        self.accepted_mail = False
        self.queued = False

    def c(self, line):
        r = cmd(self.s, self.f, line)
        if line.upper().startswith("MAIL") and code(r) == "250":
            self.accepted_mail = True
        if "queued" in r[-1]:
            self.queued = True
        return r

    def raw(self, data):
        self.s.sendall(data)

    def refused(self, data, bad_code, what):
        """Sends raw bytes; their first reply must not be bad_code."""
        self.raw(data)
        r = read_reply(self.f)
        if code(r) == bad_code:
            raise AssertionError(what)
        return r

    def starttls(self, cafile):
        r = self.c("STARTTLS")
        if code(r) != "220":
            return r
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False
        self.s = ctx.wrap_socket(self.s, server_hostname="localhost")
        self.f = self.s.makefile("rb")
        return r

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def plain_resp(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()


def relay_cases(port, user, pw, cafile):
    cases = {}

    def case(name):
        def deco(fn):
            cases[name] = fn
            return fn
        return deco

    @case("ehlo_mail_rcpt_data")
    def _(s):
        s.c("EHLO x.test"); s.c("MAIL FROM:<a@x.test>"); s.c("RCPT TO:<b@y.test>"); s.c("DATA")

    @case("no_ehlo")
    def _(s):
        s.c("MAIL FROM:<a@x.test>"); s.c("RCPT TO:<b@y.test>"); s.c("DATA")

    @case("rcpt_data_only")
    def _(s):
        s.c("EHLO x.test"); s.c("RCPT TO:<b@y.test>"); r = s.c("DATA")
        if code(r) == "354":
            raise AssertionError("DATA accepted without MAIL")

    @case("helo_then_mail")
    def _(s):
        s.c("HELO x.test"); s.c("MAIL FROM:<a@x.test>")

    @case("null_sender")
    def _(s):
        s.c("EHLO x.test"); s.c("MAIL FROM:<>"); s.c("RCPT TO:<b@y.test>")

    @case("auth_plain_before_starttls")
    def _(s):
        s.c("EHLO x.test")
        r = s.c("AUTH PLAIN " + plain_resp(user, pw))
        if code(r) != "538":
            raise AssertionError("AUTH without TLS answered " + r[-1])
        s.c("MAIL FROM:<a@x.test>")

    @case("auth_login_before_starttls")
    def _(s):
        s.c("EHLO x.test")
        r = s.c("AUTH LOGIN")
        if code(r) != "538":
            raise AssertionError("AUTH LOGIN without TLS answered " + r[-1])
        s.c(base64.b64encode(user.encode()).decode())
        s.c(base64.b64encode(pw.encode()).decode())
        s.c("MAIL FROM:<a@x.test>")

    @case("bdat_without_mail")
    def _(s):
        s.c("EHLO x.test")
        s.refused(b"BDAT 12 LAST\r\nhello world\n", "250", "BDAT accepted")
        s.c("MAIL FROM:<a@x.test>")

    @case("starttls_pipelined_mail")
    def _(s):
        s.c("EHLO x.test")
        s.refused(b"STARTTLS\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n", "220",
                  "STARTTLS with injected commands accepted")

    @case("tls_no_auth")
    def _(s):
        s.c("EHLO x.test"); s.starttls(cafile); s.c("EHLO x.test"); s.c("MAIL FROM:<a@x.test>")
        s.c("RCPT TO:<b@y.test>"); s.c("DATA")

    @case("tls_bad_password")
    def _(s):
        s.c("EHLO x.test"); s.starttls(cafile); s.c("EHLO x.test")
        r = s.c("AUTH PLAIN " + plain_resp(user, pw + "x"))
        if code(r) != "535":
            raise AssertionError("bad password answered " + r[-1])
        s.c("MAIL FROM:<a@x.test>")

    @case("tls_unknown_user")
    def _(s):
        s.c("EHLO x.test"); s.starttls(cafile); s.c("EHLO x.test")
        s.c("AUTH PLAIN " + plain_resp("nobody", pw)); s.c("MAIL FROM:<a@x.test>")

    @case("tls_authzid_other_user")
    def _(s):
        s.c("EHLO x.test"); s.starttls(cafile); s.c("EHLO x.test")
        resp = base64.b64encode(b"admin\0" + user.encode() + b"\0" + pw.encode()).decode()
        s.c("AUTH PLAIN " + resp); s.c("MAIL FROM:<a@x.test>")

    @case("auth_before_ehlo_after_tls")
    def _(s):
        s.c("EHLO x.test"); s.starttls(cafile)
        s.c("AUTH PLAIN " + plain_resp(user, pw)); s.c("MAIL FROM:<a@x.test>")

    @case("rset_noop_then_mail")
    def _(s):
        s.c("EHLO x.test"); s.c("RSET"); s.c("NOOP"); s.c("MAIL FROM:<a@x.test>")

    @case("pipelined_everything")
    def _(s):
        s.raw(b"EHLO x.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
              b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        out = b""
        while True:
            try:
                d = s.s.recv(65536)
            except OSError:
                break
            if not d:
                break
            out += d
        text = out.decode("latin-1")
        if "queued" in text or "\n354" in text or text.startswith("354"):
            raise AssertionError("pipelined transaction went through: " + text)

    bad = 0
    for name, fn in cases.items():
        s = Session(port)
        why = ""
        try:
            fn(s)
        except AssertionError as e:
            why = str(e)
        except (OSError, ssl.SSLError) as e:
            why = ""  # the server closing on us is fine
            _ = e
        if s.accepted_mail:
            why = why or "MAIL FROM accepted"
        if s.queued:
            why = why or "message queued"
        s.close()
        print("case %s %s" % (name, "ok" if not why else "BAD: " + why))
        bad += 1 if why else 0
    return bad


def smuggle(port):
    bodies = {
        "lf_dot_lf": b"Subject: s1\r\n\r\nhello\n.\nMAIL FROM:<e@x.test>\nRCPT TO:<victim@y.test>\n"
                     b"DATA\nsmuggled\n.\r\n.\r\n",
        "cr_dot_cr": b"Subject: s2\r\n\r\nhello\r.\rMAIL FROM:<e@x.test>\rRCPT TO:<victim@y.test>\r"
                     b"DATA\rsmuggled\r.\r\n.\r\n",
        "crlf_dot_lf": b"Subject: s3\r\n\r\nhello\r\n.\nMAIL FROM:<e@x.test>\r\nRCPT TO:<victim@y.test>\r\n"
                       b"DATA\r\nsmuggled\r\n.\r\n",
        "lf_dot_crlf": b"Subject: s4\r\n\r\nhello\n.\r\nMAIL FROM:<e@x.test>\r\nRCPT TO:<victim@y.test>\r\n"
                       b"DATA\r\nsmuggled\r\n.\r\n",
    }
    bad = 0
    s = Session(port, "127.0.0.1")
    s.c("EHLO x.test")
    for name, body in bodies.items():
        s.c("MAIL FROM:<a@x.test>")
        s.c("RCPT TO:<b@y.test>")
        r = s.c("DATA")
        if code(r) != "354":
            print("case %s BAD: DATA answered %s" % (name, r[-1]))
            bad += 1
            continue
        s.raw(body)
        r = read_reply(s.f)
        # Whatever followed the fake end may have been read as commands;
        # drain their replies until the final one for this body.
        ok = r[-1].startswith("554 5.6.0")
        print("case %s %s" % (name, "ok" if ok else "BAD: " + r[-1]))
        bad += 0 if ok else 1
        s.c("RSET")
    s.c("MAIL FROM:<a@x.test>")
    s.c("RCPT TO:<clean@y.test>")
    s.c("DATA")
    s.raw(b"Subject: clean\r\n\r\nclean body\r\n.\r\n")
    r = read_reply(s.f)
    ok = r[-1].startswith("250")
    print("case clean_after %s" % ("ok" if ok else "BAD: " + r[-1]))
    bad += 0 if ok else 1
    s.c("QUIT")
    s.close()
    return bad


def main():
    if sys.argv[1] == "relay":
        bad = relay_cases(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        bad = smuggle(int(sys.argv[2]))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
