"""openssl_receiver.py - an OpenSSL-based SMTP receiver for the tests
(Python's ssl module + aiosmtpd from Debian), so that tern's TLS is tested
against something other than BoringSSL talking to itself.

  python3 tests/openssl_receiver.py PORTFILE RECFILE CERT KEY

Listens on 127.0.0.1, a free port written to PORTFILE (temp + rename);
offers STARTTLS with TLS 1.2 or newer; appends one line per message to
RECFILE: mail_from TAB rcpts (comma-separated) TAB TLS protocol ("-" for
plaintext). Runs until killed.
"""
import asyncio
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP


class Record:
    def __init__(self, recfile):
        self.recfile = recfile

    async def handle_DATA(self, server, session, envelope):
        proto = session.ssl["ssl_object"].version() if session.ssl else "-"
        with open(self.recfile, "a") as f:
            f.write("%s\t%s\t%s\n" % (envelope.mail_from, ",".join(envelope.rcpt_tos), proto))
        return "250 2.0.0 ok"


async def main(portfile, recfile, cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    srv = await asyncio.get_running_loop().create_server(
        lambda: SMTP(Record(recfile), tls_context=ctx, require_starttls=False,
                     hostname="openssl.test"),
        "127.0.0.1", 0)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.sockets[0].getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: openssl_receiver.py PORTFILE RECFILE CERT KEY")
    asyncio.run(main(*sys.argv[1:5]))
