"""The operator console (`/admin/ui`) in a real headless browser: Debian's chromium driven through
chromium-driver (Selenium), against the real binary. Load the page, see a refused token reported
as 401, sign in, explain a request whose descriptor value holds markup (it must show as text),
set an override and delete it with the audit trail following, and check that the token never
appears in a URL the page requested.

SLUICE_CONSOLE_SCREENSHOT=docs/console.png regenerates the screenshot docs/console.md shows.

Run: python3 -m unittest discover -s tests/conformance -v
"""

import os
import shutil
import tempfile
import unittest

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from sluice_process import SluiceProcess

TOKEN = "console-test-token-0123456789"
RULES = """domain: shop
descriptors:
  - key: app
    rate_limit: {unit: hour, requests_per_unit: 2, name: per_app}
  - key: path
    value: /api/*
    rate_limit: {unit: hour, requests_per_unit: 5}
"""
# A value an attacker could send (no spaces: the form reads key=value pairs split on blanks).
MARKUP = "<svg/onload=window.pwned=1><b>bold</b>"


def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


class Console(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-console-")
        rules = os.path.join(self.dir, "rules.yaml")
        with open(rules, "w") as f:
            f.write(RULES)
        tokens = os.path.join(self.dir, "admin.tokens")
        with open(tokens, "w") as f:
            f.write(f"ops:{TOKEN}\n")
        self.sluice = SluiceProcess(["--config", rules, "--admin-token-file", tokens], {})
        self.browser = driver()
        self.wait = WebDriverWait(self.browser, 10)

    def tearDown(self):
        self.browser.quit()
        self.sluice.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def text_of(self, element_id):
        return self.browser.find_element(By.ID, element_id).text

    def until_text(self, element_id, needle):
        self.wait.until(EC.text_to_be_present_in_element((By.ID, element_id), needle))

    def sign_in(self, token):
        field = self.browser.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        self.browser.find_element(By.CSS_SELECTOR, "#login button").click()

    def test_an_operator_session(self):
        b = self.browser
        b.get(f"http://{self.sluice.http}/admin/ui")
        self.assertEqual(b.title, "Sluice console")

        # A wrong token: the admin API's refusal is shown as such.
        self.sign_in("not-the-token-at-all")
        self.until_text("error", "401")

        self.sign_in(TOKEN)
        self.wait.until(lambda d: not d.find_element(By.ID, "error").is_displayed())
        self.until_text("rules", "shop")

        # Explain a request whose value is markup: it shows as text, nothing runs.
        b.find_element(By.ID, "explain-domain").send_keys("shop")
        b.find_element(By.ID, "explain-descriptors").send_keys(f"app={MARKUP}\npath=/api/users")
        b.find_element(By.CSS_SELECTOR, "#explain-form button").click()
        self.until_text("explain-result", "Decision: OK")
        result = self.text_of("explain-result")
        self.assertIn(MARKUP, result)
        self.assertIn("path by wildcard /api/*", result)
        self.assertIn("per_app (fixed_window, enforce): 0 of 2 used", result)
        self.assertEqual(b.find_elements(By.CSS_SELECTOR, "#explain-result svg, #explain-result b"), [])
        self.assertIsNone(b.execute_script("return window.pwned"))

        # An override, set and deleted, with the audit trail following.
        b.find_element(By.ID, "override-domain").send_keys("shop")
        b.find_element(By.ID, "override-entries").send_keys("app=vip")
        b.find_element(By.ID, "override-limit").send_keys("50")
        b.find_element(By.ID, "override-reason").send_keys(f"launch {MARKUP}")
        b.find_element(By.CSS_SELECTOR, "#override-form button").click()
        self.until_text("overrides", "app=vip")
        self.assertIn("limit 50", self.text_of("overrides"))
        self.assertIn(MARKUP, self.text_of("overrides"))
        self.until_text("audit", "override.set")
        if os.environ.get("SLUICE_CONSOLE_SCREENSHOT"):
            b.save_screenshot(os.environ["SLUICE_CONSOLE_SCREENSHOT"])
        b.find_element(By.CSS_SELECTOR, "#overrides tbody button").click()
        self.wait.until(lambda d: "app=vip" not in d.find_element(By.ID, "overrides").text)
        self.until_text("audit", "override.delete")
        self.assertEqual(b.find_elements(By.CSS_SELECTOR, "main svg, main b"), [])

        # The token went in headers only: no URL the page loaded or called carries it.
        urls = b.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".concat([location.href])")
        self.assertTrue(any("/admin/explain" in u for u in urls), urls)
        self.assertFalse([u for u in urls if TOKEN in u], urls)


if __name__ == "__main__":
    unittest.main()
