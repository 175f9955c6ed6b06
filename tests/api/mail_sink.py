"""An SMTP server for warden's tests: aiosmtpd on 127.0.0.1:PORT, optionally
with STARTTLS required (--cert/--key) and AUTH required (--user/--password).
Prints {"ready": PORT} once it listens, then one JSON line per mail received,
and runs until it is killed."""

import argparse
import json
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--user")
parser.add_argument("--password")
args = parser.parse_args()


class Sink:
    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        print(
            json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "data": content.decode("utf-8", "replace"),
                    "tls": getattr(session, "ssl", None) is not None,
                    "authenticated": bool(session.authenticated),
                }
            ),
            flush=True,
        )
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    good = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == args.user
        and auth_data.password.decode() == args.password
    )
    return AuthResult(success=good, handled=False)


options = {}
if args.cert:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    options.update(tls_context=context, require_starttls=True)
if args.user:
    options.update(
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=bool(args.cert),
    )

controller = Controller(Sink(), hostname="127.0.0.1", port=args.port, **options)
controller.start()
print(json.dumps({"ready": args.port}), flush=True)
while True:
    time.sleep(3600)
