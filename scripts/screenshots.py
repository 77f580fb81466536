#!/usr/bin/env python3
"""Screenshots of every dashboard page for docs/screenshots/, taken in
Debian's Chromium (chromium, chromium-driver) through Selenium, on the shop
the browser tests use (tests/browser/shop.py): keys, orders fulfilled and
waiting, one that needs attention, coupons, and a merchant endpoint that
refuses, so that its deliveries die. One PNG per page, the overview as a
phone shows it, and the API reference at /docs.

    python3 -m pip install selenium==4.27.1
    cargo build --release
    python3 scripts/screenshots.py [target/release/allot] [docs/screenshots]
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "browser"))
from shop import ADMIN, Shop, browser, free_port, wait_until  # noqa: E402

from selenium.webdriver.common.by import By  # noqa: E402


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/allot"
    out = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "docs/screenshots")
    os.makedirs(out, exist_ok=True)
    shop = Shop(binary, {"course-101": 40, "course-202": 3, "ebook-303": 2}, free_port())
    try:
        for i in range(12):
            sku = ["course-101", "course-202", "ebook-303"][i % 3]
            shop.order(f"WC-{1000 + i}", f"buyer{i}@example.com", sku)
        shop.post(f"/v1/webhooks/generic?token={shop.env['ALLOT_WEBHOOK_TOKEN']}",
                  "order=WC-1013&email=<not a form we know>", "text/plain")
        shop.post("/api/coupons", json.dumps({"name": "BLACK_FRIDAY", "amount": 50}))
        shop.post("/api/coupons", json.dumps({"name": "EARLY_BIRD", "amount": 3}))
        for user in ["u1", "u2", "u3"]:
            shop.post("/api/coupons/claim", json.dumps({"user_id": user, "coupon_name": "EARLY_BIRD"}))
        wait_until("the endpoint's deliveries to die",
                   lambda: shop.stats()["jobs"]["by_state"]["dead"] >= 12, seconds=60)
        shoot(shop.base, out)
    finally:
        shop.stop()


def shoot(base, out):
    chrome = browser()
    try:
        chrome.get(f"{base}/admin/login")
        save(chrome, out, "login")
        chrome.find_element(By.ID, "token").send_keys(ADMIN)
        chrome.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_until("the overview", lambda: "Overview" in chrome.title)
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
            chrome.get(base + path)
            save(chrome, out, name)
        chrome.get(f"{base}/admin/orders?state=needs_attention")
        chrome.get(chrome.find_element(By.CSS_SELECTOR, "tbody a").get_attribute("href"))
        save(chrome, out, "order-needs-attention")
        chrome.get(f"{base}/admin/jobs?state=dead")
        chrome.get(chrome.find_element(By.CSS_SELECTOR, "tbody a").get_attribute("href"))
        save(chrome, out, "job")
        chrome.get(f"{base}/docs")
        wait_until("the API reference", lambda: chrome.find_elements(By.CSS_SELECTOR, ".opblock"))
        # Its first screen: the whole reference is a dozen screens tall.
        chrome.save_screenshot(os.path.join(out, "api-docs.png"))
        print("api-docs.png")
        chrome.set_window_size(390, 844)
        chrome.get(f"{base}/admin")
        save(chrome, out, "overview-phone")
    finally:
        chrome.quit()


def save(chrome, out, name):
    # The whole page, not just the window: as tall as its content.
    height = chrome.execute_script("return document.documentElement.scrollHeight")
    width = chrome.get_window_size()["width"]
    chrome.set_window_size(width, max(height + 120, 600))
    chrome.save_screenshot(os.path.join(out, f"{name}.png"))
    chrome.set_window_size(width, 900 if width > 500 else 844)
    print(f"{name}.png")


if __name__ == "__main__":
    main()
