#!/usr/bin/env python3
"""Screenshots of every dashboard page for docs/screenshots/, taken in
Debian's Chromium (chromium, chromium-driver) through Selenium.

Starts `allot serve` on a fresh SQLite database in a temporary directory,
fills it as a small sale would (keys, orders fulfilled and waiting, one
that needs attention, a coupon, a merchant endpoint that refuses, so that
its deliveries die), then logs in and saves one PNG per page, and the
overview as a phone shows it.

    python3 -m pip install selenium==4.27.1
    cargo build --release
    python3 scripts/screenshots.py [target/release/allot] [docs/screenshots]
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ADMIN = "screenshot-admin-token"
WEBHOOK = "screenshot-webhook-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, content_type="application/json"):
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    request.add_header("content-type", content_type)
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read() or b"null")


def wait_until(what, check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/allot")
    out = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "docs/screenshots")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="allot-screenshots-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        ALLOT_DATABASE_URL=f"sqlite://{work}/allot.db",
        ALLOT_LISTEN=f"127.0.0.1:{port}",
        ALLOT_ADMIN_TOKEN=ADMIN,
        ALLOT_WEBHOOK_TOKEN=WEBHOOK,
        ALLOT_MAIL_DIR=f"{work}/mail",
        ALLOT_ADMIN_EMAIL="owner@shop.example",
        ALLOT_LOW_STOCK_THRESHOLD="5",
        # The refusing endpoint's deliveries die within seconds.
        ALLOT_RETRY_SCHEDULE="1s",
        RUST_LOG="warn",
    )
    run = lambda *args: subprocess.run([binary, *args], env=env, cwd=work, check=True,
                                       capture_output=True, text=True)
    run("migrate")
    keys = {"course-101": 40, "course-202": 3, "ebook-303": 2}
    for sku, n in keys.items():
        path = f"{work}/{sku}.txt"
        with open(path, "w") as f:
            f.writelines(f"{sku.upper()}-{i:05d}-XXXX\n" for i in range(n))
        run("keys", "import", path, "--sku", sku)
    closed = free_port()  # nothing listens there: every delivery fails
    run("endpoints", "add", f"http://127.0.0.1:{closed}/hooks", "--events", "order.*",
        "--description", "CRM (down)")
    server = subprocess.Popen([binary, "serve"], env=env, cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("the server", lambda: _ok(f"{base}/healthz"))
        hook = f"{base}/v1/webhooks/generic?token={WEBHOOK}"
        for i in range(12):
            sku = ["course-101", "course-202", "ebook-303"][i % 3]
            post(hook, json.dumps({"order_id": f"WC-{1000 + i}",
                                   "email": f"buyer{i}@example.com", "sku": sku}))
        post(hook, "order=WC-1013&email=<not a form we know>", "text/plain")
        post(f"{base}/api/coupons", json.dumps({"name": "BLACK_FRIDAY", "amount": 50}))
        post(f"{base}/api/coupons", json.dumps({"name": "EARLY_BIRD", "amount": 3}))
        for user in ["u1", "u2", "u3"]:
            try:
                post(f"{base}/api/coupons/claim",
                     json.dumps({"user_id": user, "coupon_name": "EARLY_BIRD"}))
            except urllib.error.HTTPError:
                pass
        wait_until("the endpoint's deliveries to die", lambda: b"dead" in _get(
            f"{base}/v1/stats", ADMIN) and json.loads(_get(f"{base}/v1/stats", ADMIN))
            ["jobs"]["by_state"]["dead"] > 0, seconds=60)
        shoot(base, out)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ok(url):
    try:
        with urllib.request.urlopen(url) as answer:
            return answer.status == 200
    except OSError:
        return False


def _get(url, token):
    request = urllib.request.Request(url)
    request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as answer:
        return answer.read()


def shoot(base, out):
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--force-color-profile=srgb"]:
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.set_window_size(1280, 900)
        browser.get(f"{base}/admin/login")
        save(browser, out, "login")
        browser.find_element(By.ID, "token").send_keys(ADMIN)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_until("the overview", lambda: "Overview" in browser.title)
        pages = [
            ("overview", "/admin"),
            ("orders", "/admin/orders"),
            ("orders-waiting", "/admin/orders?state=awaiting_stock"),
            ("jobs-dead", "/admin/jobs?state=dead"),
            ("keys", "/admin/keys"),
            ("processes", "/admin/processes"),
            ("endpoints", "/admin/endpoints"),
        ]
        for name, path in pages:
            browser.get(base + path)
            save(browser, out, name)
        browser.get(f"{base}/admin/orders?state=needs_attention")
        browser.find_element(By.CSS_SELECTOR, "tbody a").click()
        save(browser, out, "order-needs-attention")
        browser.get(f"{base}/admin/jobs?state=dead")
        browser.find_element(By.CSS_SELECTOR, "tbody a").click()
        save(browser, out, "job")
        browser.set_window_size(390, 844)
        browser.get(f"{base}/admin")
        save(browser, out, "overview-phone")
    finally:
        browser.quit()


def save(browser, out, name):
    # The whole page, not just the window: as tall as its content.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    width = browser.get_window_size()["width"]
    browser.set_window_size(width, max(height + 120, 600))
    browser.save_screenshot(os.path.join(out, f"{name}.png"))
    browser.set_window_size(width, 900 if width > 500 else 844)
    print(f"{name}.png")


if __name__ == "__main__":
    main()
