"""The dashboard in Firefox too: Debian's firefox-esr driven over WebDriver (geckodriver, from
crates.io): a job made through the form, its page with the schedule in words and its next fires,
the list, and a fire seen live."""

import os

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.firefox.options import Options
from selenium.webdriver.firefox.service import Service as Driver
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from conftest import SHOTS


@pytest.fixture
def firefox():
    options = Options()
    options.add_argument("-headless")
    options.binary_location = os.environ.get("FIREFOX", "/usr/bin/firefox-esr")
    driver = webdriver.Firefox(
        options=options,
        service=Driver(executable_path=os.environ["GECKODRIVER"], log_output=os.devnull),
    )
    driver.set_window_size(1280, 900)
    yield driver
    driver.quit()


def wait(driver, condition, seconds=20):
    return WebDriverWait(driver, seconds).until(condition)


def test_the_dashboard_works_in_firefox(service, firefox):
    firefox.get(f"{service.base}/")
    wait(firefox, seen.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1"), "Overview"))
    firefox.get(f"{service.base}/ui/#/new")
    name = wait(firefox, seen.presence_of_element_located((By.ID, "in-name")))
    name.send_keys("made in firefox")
    firefox.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="cron"]').click()
    cron = firefox.find_element(By.ID, "in-schedule-cron")
    cron.clear()
    cron.send_keys("0 9 * * MON")
    wait(firefox, seen.text_to_be_present_in_element((By.ID, "preview"), "09:00:00+0"))
    firefox.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()
    wait(firefox, seen.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1"), "made in firefox"))
    wait(firefox, seen.text_to_be_present_in_element((By.CSS_SELECTOR, "dl.fields"),
                                                     "At 09:00 on Monday, Europe/Berlin"))
    assert len(wait(firefox, lambda d: d.find_elements(By.CSS_SELECTOR, "ol.fires li") or None)) == 10
    job_id = firefox.current_url.rsplit("/", 1)[-1]
    # Live: a fire made through the API shows without a reload.
    wait(firefox, seen.text_to_be_present_in_element((By.ID, "live"), "live"))
    assert service.call("POST", f"/api/v1/jobs/{job_id}/trigger")[0] == 200
    wait(firefox, seen.text_to_be_present_in_element((By.ID, "job-status"), "RUNNING"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    firefox.save_screenshot(str(SHOTS / "firefox-job.png"))
    firefox.get(f"{service.base}/ui/#/jobs")
    wait(firefox, seen.presence_of_element_located((By.LINK_TEXT, "made in firefox")))
