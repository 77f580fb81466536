"""A small shop for the browser tests and the screenshots: `allot serve` on
a fresh SQLite database in a temporary directory, filled as a sale would
fill it, and a headless Chromium (Debian's chromium and chromium-driver)
driven through Selenium."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ADMIN = "browser-admin-token"
WEBHOOK = "browser-webhook-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Shop:
    """`allot serve` with the dashboard on, its keys, orders and coupons.

    `endpoint_port` is where the merchant endpoint points; nothing listens
    there unless the caller starts something, so its deliveries die after
    two attempts (`ALLOT_RETRY_SCHEDULE=1s`)."""

    def __init__(self, binary, keys, endpoint_port):
        self.binary = os.path.abspath(binary)
        self.work = tempfile.mkdtemp(prefix="allot-browser-")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.env = dict(
            os.environ,
            ALLOT_DATABASE_URL=f"sqlite://{self.work}/allot.db",
            ALLOT_LISTEN=f"127.0.0.1:{port}",
            ALLOT_ADMIN_TOKEN=ADMIN,
            ALLOT_WEBHOOK_TOKEN=WEBHOOK,
            ALLOT_MAIL_DIR=f"{self.work}/mail",
            ALLOT_ADMIN_EMAIL="owner@shop.example",
            ALLOT_LOW_STOCK_THRESHOLD="5",
            ALLOT_RETRY_SCHEDULE="1s",
            ALLOT_WORKER_POLL_INTERVAL="100ms",
            RUST_LOG="warn",
        )
        self.cli("migrate")
        for sku, n in keys.items():
            path = f"{self.work}/{sku}.txt"
            with open(path, "w") as f:
                f.writelines(f"{sku.upper()}-{i:05d}-XXXX\n" for i in range(n))
            self.cli("keys", "import", path, "--sku", sku)
        self.cli("endpoints", "add", f"http://127.0.0.1:{endpoint_port}/hooks",
                 "--events", "order.*", "--description", "CRM")
        self.server = subprocess.Popen([self.binary, "serve"], env=self.env, cwd=self.work,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until("the server", self._healthy)

    def cli(self, *args):
        return subprocess.run([self.binary, *args], env=self.env, cwd=self.work, check=True,
                              capture_output=True, text=True).stdout

    def _healthy(self):
        if self.server.poll() is not None:
            sys.exit(f"allot serve exited: {self.server.stderr.read()}")
        try:
            with urllib.request.urlopen(f"{self.base}/healthz") as answer:
                return answer.status == 200
        except OSError:
            return False

    def post(self, path, body, content_type="application/json"):
        request = urllib.request.Request(self.base + path, data=body.encode(), method="POST")
        request.add_header("content-type", content_type)
        try:
            with urllib.request.urlopen(request) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return json.loads(error.read() or b"null")

    def order(self, order_id, email, sku):
        return self.post(f"/v1/webhooks/generic?token={WEBHOOK}",
                         json.dumps({"order_id": order_id, "email": email, "sku": sku}))

    def stats(self):
        request = urllib.request.Request(f"{self.base}/v1/stats")
        request.add_header("authorization", f"Bearer {ADMIN}")
        with urllib.request.urlopen(request) as answer:
            return json.loads(answer.read())

    def jobs(self):
        return json.loads(self.cli("jobs", "list", "--json"))

    def stop(self):
        self.server.terminate()
        self.server.wait(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)


def browser(width=1280, height=900):
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--force-color-profile=srgb", "--disable-dev-shm-usage"]:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_window_size(width, height)
    return chrome
