#!/usr/bin/env python3
"""A merchant endpoint for trying allot's webhooks: verifies every request
with the Standard Webhooks reference library and prints the event.

    pip install standardwebhooks
    scripts/webhook-receiver.py SECRET [PORT]

Answers 204 to a request whose signature verifies, 401 to one that does
not (allot dead-letters it at once, as a wrong secret will not mend
itself: it shows in `allot endpoints attempts ID`, and
`allot endpoints redrive ID` resends once the secret is right).
"""
import http.server, json, sys

from standardwebhooks import Webhook, WebhookVerificationError

hook = Webhook(sys.argv[1])
port = int(sys.argv[2]) if len(sys.argv) > 2 else 9090


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = hook.verify(body, dict(self.headers))
        except WebhookVerificationError as error:
            print(f"REFUSED {self.headers.get('webhook-id')}: {error}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        print(self.headers.get("webhook-id"), json.dumps(event), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


print(f"listening on 127.0.0.1:{port}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
