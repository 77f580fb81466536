"""A real SMTP server for allot's tests (aiosmtpd).

Usage: smtp_server.py PORT DIR

- every accepted message is written to DIR/<n>.eml (atomically);
- RCPT TO an address starting with "reject" answers 550 (permanent);
- RCPT TO an address starting with "tempfail" answers 451 (transient);
- while DIR/hang exists, DATA waits (a delivery "in flight") after writing
  DIR/receiving-<n> so a test knows a client is mid-send.
"""

import asyncio
import itertools
import os
import sys

from aiosmtpd.controller import Controller

counter = itertools.count(1)


class Handler:
    def __init__(self, directory):
        self.directory = directory

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if address.startswith("tempfail"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(counter)
        hang = os.path.join(self.directory, "hang")
        if os.path.exists(hang):
            open(os.path.join(self.directory, "receiving-%d" % n), "w").close()
            while os.path.exists(hang):
                await asyncio.sleep(0.05)
            return "451 4.3.0 interrupted"
        tmp = os.path.join(self.directory, ".%d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(envelope.content)
        os.rename(tmp, os.path.join(self.directory, "%d.eml" % n))
        return "250 Message accepted"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Handler(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # runs until the test closes our stdin or kills us
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
