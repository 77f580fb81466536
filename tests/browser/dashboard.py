#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium (Debian's chromium
and chromium-driver) driven through Selenium against `allot serve`.

An operator logs in (after a wrong token), sees the sold-out SKU
highlighted, retries a dead letter once the merchant's server is back and
sees it delivered, imports keys and sees the waiting orders fulfilled, and
logs out. A form whose CSRF token was tampered with is refused and changes
nothing, and a form on another site cannot act for the logged-in operator
(the cookie is SameSite=Strict). The API reference at /docs renders every
operation from files allot serves itself. A key file sent over a slow link
shows its upload's progress.

    python3 tests/browser/dashboard.py [target/debug/allot]

Run by .ci/run after `cargo test`, which builds the binary.
"""

import http.server
import os
import sys
import tempfile
import threading

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import ADMIN, Shop, browser, free_port, wait_until  # noqa: E402


class Merchant(http.server.BaseHTTPRequestHandler):
    """The merchant's server once it is back: takes every webhook."""

    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Merchant.received.append((self.headers.get("webhook-id"), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class Forger(http.server.BaseHTTPRequestHandler):
    """Another site, whose page posts a form to the dashboard on load."""

    target = ""

    def do_GET(self):
        page = (f'<form id="f" method="post" action="{Forger.target}">'
                '<input name="csrf" value="guess"></form>'
                '<script>document.getElementById("f").submit()</script>')
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


def serve(handler, port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def follow(chrome, element):
    """Clicks a link or a form's button and waits for the next page: until
    the old page's root is gone. Chrome reports a node of a page being
    replaced either as stale or as "does not belong to the document";
    both mean the old page is gone."""
    page = chrome.find_element(By.TAG_NAME, "html")
    element.click()

    def gone(_):
        try:
            page.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(chrome, 30).until(gone)


def text(chrome):
    return chrome.find_element(By.TAG_NAME, "main").text


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/allot"
    merchant_port = free_port()
    shop = Shop(binary, {"course-101": 5, "ebook-303": 1}, merchant_port)
    chrome = browser()
    try:
        # Orders: one sells ebook-303 out, two more wait for it.
        for i, sku in enumerate(["course-101", "ebook-303", "ebook-303", "ebook-303"]):
            shop.order(f"B-{i}", f"buyer{i}@example.com", sku)
        wait_until("the merchant's deliveries to die (nobody listens)",
                   lambda: shop.stats()["jobs"]["by_state"]["dead"] >= 4, seconds=60)

        # Logging in: a wrong token first.
        chrome.get(f"{shop.base}/admin")
        assert chrome.current_url.endswith("/admin/login"), chrome.current_url
        chrome.find_element(By.ID, "token").send_keys("not-the-token")
        follow(chrome, chrome.find_element(By.CSS_SELECTOR, "form.login button"))
        assert "That is not the admin token" in text(chrome), text(chrome)
        chrome.find_element(By.ID, "token").send_keys(ADMIN)
        follow(chrome, chrome.find_element(By.CSS_SELECTOR, "form.login button"))
        wait_until("the overview", lambda: "Overview" in chrome.title)

        # The sold-out SKU is highlighted; the other is not.
        sold_out = chrome.find_element(By.XPATH, "//tr[th[text()='ebook-303']]")
        assert "level-sold_out" in sold_out.get_attribute("class"), sold_out.get_attribute("outerHTML")
        assert "Sold out" in sold_out.text
        in_stock = chrome.find_element(By.XPATH, "//tr[th[text()='course-101']]")
        assert "level-sold_out" not in in_stock.get_attribute("class")

        # A tampered CSRF token: refused, nothing retried.
        chrome.get(f"{shop.base}/admin/jobs/retry-dead")
        chrome.execute_script("document.querySelector('form.confirm input[name=csrf]').value = 'forged'")
        follow(chrome, chrome.find_element(By.CSS_SELECTOR, "form.confirm button"))
        assert "This form was not accepted" in text(chrome), text(chrome)
        dead_before = shop.stats()["jobs"]["by_state"]["dead"]
        assert dead_before >= 4, dead_before

        # Another site's form, posted from the operator's browser.
        forger_port = free_port()
        Forger.target = f"{shop.base}/admin/jobs/retry-dead"
        forger = serve(Forger, forger_port)
        chrome.get(f"http://localhost:{forger_port}/")
        wait_until("the forged form to be answered",
                   lambda: chrome.current_url.startswith(shop.base))
        assert chrome.current_url.endswith("/admin/login"), chrome.current_url
        forger.shutdown()
        assert shop.stats()["jobs"]["by_state"]["dead"] == dead_before, "the forged post acted"

        # The merchant's server is back: retry one dead letter from its page.
        merchant = serve(Merchant, merchant_port)
        chrome.get(f"{shop.base}/admin/jobs?state=dead")
        assert "cannot connect" in text(chrome), text(chrome)
        follow(chrome, chrome.find_element(By.CSS_SELECTOR, "tbody a"))
        job_url = chrome.current_url
        assert "gave up after 2 attempts" in text(chrome), text(chrome)
        follow(chrome, chrome.find_element(By.LINK_TEXT, "Retry…"))
        assert "Are you sure?" in text(chrome)
        follow(chrome, chrome.find_element(By.CSS_SELECTOR, "form.confirm button"))
        assert "queued again" in text(chrome), text(chrome)

        def delivered():
            chrome.get(job_url)
            state = chrome.find_element(By.XPATH, "//dt[text()='State']/following-sibling::dd[1]")
            return state.text == "done"
        wait_until("the retried delivery to be done", delivered)
        assert len(Merchant.received) == 1, Merchant.received
        merchant.shutdown()

        # Keys imported from the keys page fulfil the orders waiting for them;
        # on a slow link the page shows how much of the file has gone up.
        count = 60_000
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as keys:
            keys.writelines(f"EBOOK-NEW-{n:06d}\n" for n in range(count))
        chrome.get(f"{shop.base}/admin/orders?state=awaiting_stock")
        assert "B-2" in text(chrome) and "B-3" in text(chrome), text(chrome)
        chrome.get(f"{shop.base}/admin/keys")
        chrome.find_element(By.ID, "sku").send_keys("ebook-303")
        chrome.find_element(By.ID, "file").send_keys(keys.name)
        chrome.set_network_conditions(latency=5, download_throughput=10_000_000,
                                      upload_throughput=250 * 1024)
        progress = chrome.find_element(By.ID, "import-progress")
        assert not progress.is_displayed()
        chrome.find_element(By.XPATH, "//form[@action='/admin/keys/import']//button").click()
        seen = []

        def part_way():
            try:
                seen.append(progress.text)
            except WebDriverException:  # the page with the result replaced it
                return True
            return any("Uploading… " in t and " % (" in t and "100 %" not in t
                       and "… 0 %" not in t for t in seen)
        wait_until("the upload's progress to show", part_way, seconds=60)
        chrome.delete_network_conditions()
        assert any(" % (" in t for t in seen), f"no progress was shown: {seen}"
        def imported():
            try:
                return f"Imported {count} key(s) into ebook-303" in text(chrome)
            except WebDriverException:  # between the two pages
                return False
        wait_until("the import's result", imported, seconds=60)
        os.unlink(keys.name)

        def none_waiting():
            chrome.get(f"{shop.base}/admin/orders?state=awaiting_stock")
            return "No orders in state awaiting stock" in text(chrome)
        wait_until("no order to wait for stock", none_waiting)
        chrome.get(f"{shop.base}/admin/orders/generic/B-3")
        assert "fulfilled" in chrome.find_element(By.CSS_SELECTOR, "dl.details").text

        # Logging out ends the session.
        follow(chrome, chrome.find_element(By.CSS_SELECTOR, "form.logout button"))
        assert chrome.current_url.endswith("/admin/login"), chrome.current_url
        chrome.get(f"{shop.base}/admin")
        assert chrome.current_url.endswith("/admin/login"), chrome.current_url

        # The API reference renders every operation of /openapi.json, with
        # everything it loads served by allot itself.
        chrome.get(f"{shop.base}/docs")
        assert chrome.current_url == f"{shop.base}/docs/", chrome.current_url
        wait_until("the API reference to render",
                   lambda: chrome.find_elements(By.ID, "operations-coupons-claimCoupon"))
        operations = chrome.find_elements(By.CSS_SELECTOR, ".opblock")
        assert len(operations) >= 40, len(operations)
        loaded = chrome.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert any(url.endswith("/openapi.json") for url in loaded), loaded
        elsewhere = [url for url in loaded if not url.startswith(shop.base)]
        assert not elsewhere, elsewhere
        print("browser tests: ok")
    finally:
        chrome.quit()
        shop.stop()


if __name__ == "__main__":
    main()
