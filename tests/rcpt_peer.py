#!/usr/bin/python3
"""rcpt_peer.py - an SMTP receiver (aiosmtpd) that answers each RCPT TO by
the recipient's local part, for per-recipient outcome tests.

Usage: rcpt_peer.py PORTFILE MAILDIR [CERT KEY]
Listens on 127.0.0.1:0 and writes its port to PORTFILE. With CERT and KEY
(PEM files) it offers STARTTLS with them. Local parts:
  defer*    451 4.2.1 mailbox busy, try later
  reject*   550 5.1.1 no such user
  anything else is accepted.
Each accepted message is written to MAILDIR/N.eml as
"MAIL <sender>\nRCPT <r1> <r2>...\n\n" followed by the data.
Runs until SIGTERM.
"""
import os
import signal
import socket
import ssl
import sys

from aiosmtpd.controller import Controller

portfile, maildir = sys.argv[1], sys.argv[2]
count = [0]


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.startswith("defer"):
            return "451 4.2.1 mailbox busy, try later"
        if local.startswith("reject"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        count[0] += 1
        tmp = os.path.join(maildir, ".%d.tmp" % count[0])
        with open(tmp, "wb") as f:
            f.write(("MAIL <%s>\nRCPT %s\n\n" % (envelope.mail_from.strip("<>"),
                     " ".join("<%s>" % r for r in envelope.rcpt_tos))).encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(maildir, "%d.eml" % count[0]))
        return "250 2.0.0 queued"


# aiosmtpd's controller probes its own port, so it cannot take port 0:
# it serves a socket already bound to a free port instead.
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(64)
port = sock.getsockname()[1]


class SockController(Controller):
    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=sock)


tls = {}
if len(sys.argv) == 5:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    tls = {"tls_context": ctx}
ctl = SockController(Handler(), hostname="127.0.0.1", port=port, **tls)
ctl.start()
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % port)
os.rename(portfile + ".tmp", portfile)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
ctl.stop()
