"""The API docs page as a person sees it: headless Chromium opens /api/bitrix/docs with every host but
loopback unreachable, finds the operations listed per entity, and runs "Try it out" on one GET against
the app in front of the emulator.

Needs Chromium and its driver (``apt-get install chromium chromium-driver``; .ci/run installs them) and
selenium (requirements-dev.txt); skipped, with that reason, where they are missing.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:  # pragma: no cover - requirements-dev.txt installs it
    selenium = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Chromium is not installed "
                       "(apt-get install chromium chromium-driver) to look at the docs page"),
    pytest.mark.skipif(selenium is None, reason="selenium is not installed (pip install -r requirements-dev.txt)"),
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium's driver manager must not look online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000",
                 # networking off: every name but loopback fails to resolve, so a CDN script could not load
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_the_docs_page_lists_the_operations_and_try_it_out_works(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    created = stack.http.post(f"{stack.api}/clients/1/contacts", json={"fields": {"NAME": "Ada", "LAST_NAME": "Docs"}})
    assert created.status_code == 201, created.text
    contact_id = created.json()["result"]

    browser.get(f"{stack.api}/docs")
    wait = WebDriverWait(browser, 30)
    # Swagger UI renders an operation block per operationId, grouped by tag (one tag per entity).
    get_contact = wait.until(ec.presence_of_element_located((By.ID, "operations-contacts-getContact")))
    for operation in ("operations-contacts-createContact", "operations-deals-listDeals",
                      "operations-deals-updateDeal", "operations-config-saveConfig"):
        assert browser.find_elements(By.ID, operation), operation
    assert "{entity}" not in browser.page_source  # every entity has its own paths

    get_contact.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: get_contact.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    get_contact.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    for name, value in (("client_id", "1"), ("record_id", str(contact_id))):
        field = wait.until(lambda _, n=name: get_contact.find_element(
            By.CSS_SELECTOR, f"tr[data-param-name='{n}'] input"))
        field.clear()
        field.send_keys(value)
    get_contact.find_element(By.CSS_SELECTOR, ".execute").click()
    status = wait.until(lambda _: get_contact.find_element(
        By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"))
    body = get_contact.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_description pre").text
    browser.save_screenshot(str(tmp_path / "docs.png"))
    assert status.text.strip().startswith("200"), (status.text, body)
    assert '"NAME": "Ada"' in body and '"LAST_NAME": "Docs"' in body
    # The page took nothing from outside: every script and style came from our own prefix.
    sources = browser.execute_script(
        "return [...document.scripts].map(s => s.src).concat([...document.querySelectorAll('link')].map(l => l.href))")
    assert sources and all(src == "" or src.startswith(stack.app_server.url) for src in sources), sources
