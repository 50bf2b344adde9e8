"""The dashboard in a real browser against the real binary: forms, the server's field errors, the
DST preview, live updates (also across a restart of the service), the actions and their buttons,
filters and paging in the URL, access control, phone width, and accessibility (axe-core)."""

import datetime
import time
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import expect

from conftest import ROOT, Service, axe, shoot


def soon(seconds):
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sms(name, schedule, **extra):
    return {"name": name, "jobType": "SMS", "jobData": {"To": "+100"}, "schedule": schedule, **extra}


def create(service, body):
    status, job = service.call("POST", "/api/v1/jobs", body)
    assert status == 201, job
    return job


def no_serious_violations(page, where):
    found = axe(page)
    assert not found, f"{where}: {found}"


def test_a_job_created_through_the_form_is_in_the_list(service, page):
    page.goto(f"{service.base}/")
    expect(page).to_have_url(f"{service.base}/ui/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    shoot(page, "overview")
    no_serious_violations(page, "overview")
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Name", exact=True).fill("Weekly report from the form")
    page.get_by_label("Description").fill("made in the browser")
    page.get_by_role("radio", name="cron").check()
    page.get_by_label("Cron", exact=True).fill("0 9 * * MON")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    expect(page.locator("#preview li").first).to_contain_text("09:00:00+0")
    shoot(page, "new-job")
    no_serious_violations(page, "new job")
    page.get_by_role("button", name="Create job").click()
    expect(page.get_by_role("heading", name="Weekly report from the form")).to_be_visible()
    expect(page.locator("dl.fields")).to_contain_text("At 09:00 on Monday, Europe/Berlin")
    expect(page.locator("ol.fires li")).to_have_count(10)
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_role("link", name="Weekly report from the form")).to_be_visible()
    shoot(page, "jobs")
    no_serious_violations(page, "jobs")


def test_a_bad_cron_shows_the_server_s_message_beside_the_field(service, page):
    page.goto(f"{service.base}/ui/#/new")
    page.get_by_label("Name", exact=True).fill("bad cron")
    page.get_by_role("radio", name="cron").check()
    page.get_by_label("Cron", exact=True).fill("61 * * * *")
    page.get_by_role("button", name="Create job").click()
    cron = page.get_by_label("Cron", exact=True)
    expect(cron).to_have_attribute("aria-invalid", "true")
    beside = page.locator("#in-schedule-cron-error")
    expect(beside).not_to_be_empty()
    status, answer = service.call("POST", "/api/v1/jobs", sms("bad cron", {"cron": "61 * * * *"}))
    assert status == 400
    message = next(e["message"] for e in answer["errors"] if e["field"] == "schedule.cron")
    expect(beside).to_have_text(message)
    assert service.call("GET", "/api/v1/jobs")[1]["totalCount"] == 0, "nothing stored"


def test_the_preview_flags_the_dst_shift_of_a_berlin_cron_on_the_last_sunday_of_march(service, page):
    page.goto(f"{service.base}/ui/#/new")
    page.get_by_role("radio", name="cron").check()
    page.get_by_label("Cron", exact=True).fill("30 2 * * *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Preview fires from (optional)").fill("2027-03-25")
    shifted = page.locator("#preview li", has_text="DST")
    expect(shifted).to_have_count(1)
    expect(shifted).to_contain_text("2027-03-28T03:00:00+02:00")
    expect(shifted).to_contain_text("moved from 2027-03-28T02:30:00")


def test_a_job_turns_running_on_the_open_page_then_succeeded_after_its_result(service, page):
    job = create(service, sms("fires while watched", {"runAt": soon(4)}))
    page.goto(f"{service.base}/ui/#/jobs/{job['id']}")
    status = page.locator("#job-status")
    expect(status).to_have_text("SCHEDULED")
    expect(page.locator("#live")).to_contain_text("live")
    expect(status).to_have_text("RUNNING", timeout=20_000)
    expect(page.locator("table")).to_contain_text("RUNNING")
    runs = service.call("GET", f"/api/v1/jobs/{job['id']}/runs")[1]["runs"]
    reported = service.call(
        "POST", f"/api/v1/jobs/{job['id']}/runs/{runs[0]['runId']}/result",
        {"status": "SUCCEEDED", "output": "sent"},
    )
    assert reported[0] == 200
    expect(status).to_have_text("SUCCEEDED")
    expect(page.locator("table")).to_contain_text("sent")
    shoot(page, "job")
    no_serious_violations(page, "job")


def test_the_job_page_resumes_its_stream_after_a_restart_of_the_service(service, page):
    job = create(service, sms("watched through a restart", {"cron": "0 0 1 1 *"}))
    page.goto(f"{service.base}/ui/#/jobs/{job['id']}")
    expect(page.locator("#live")).to_contain_text("live")
    service.stop()
    expect(page.locator("#live")).to_contain_text("reconnecting", timeout=10_000)
    service.start()
    expect(page.locator("#live")).to_contain_text("live", timeout=20_000)
    assert service.call("POST", f"/api/v1/jobs/{job['id']}/trigger")[0] == 200
    expect(page.locator("#job-status")).to_have_text("RUNNING", timeout=20_000)


def test_pause_and_resume_change_the_status_and_the_buttons(service, page):
    job = create(service, sms("paused in the browser", {"cron": "0 9 * * *"}))
    page.goto(f"{service.base}/ui/#/jobs/{job['id']}")
    pause = page.get_by_role("button", name="Pause")
    resume = page.get_by_role("button", name="Resume")
    expect(pause).to_be_enabled()
    expect(resume).to_be_disabled()
    pause.click()
    expect(page.locator("#job-status")).to_have_text("PAUSED")
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    expect(page.locator("#notice")).to_contain_text("pause done")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#job-status")).to_have_text("SCHEDULED")
    expect(page.get_by_role("button", name="Pause")).to_be_enabled()
    assert service.call("GET", f"/api/v1/jobs/{job['id']}")[1]["status"] == "SCHEDULED"


def test_delete_asks_first(service, page):
    job = create(service, sms("deleted in the browser", {"cron": "0 9 * * *"}))
    page.goto(f"{service.base}/ui/#/jobs/{job['id']}")
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("alert")).to_contain_text("Delete")
    page.get_by_role("button", name="Keep it").click()
    assert service.call("GET", f"/api/v1/jobs/{job['id']}")[0] == 200, "kept"
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete it").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    assert service.call("GET", f"/api/v1/jobs/{job['id']}")[0] == 404


def test_filters_and_paging_survive_a_reload(service, page):
    for i in range(25):
        create(service, sms(f"listed {i:02}", {"cron": "0 9 * * *"}))
    create(service, {"name": "an email", "jobType": "EMAIL", "schedule": {"cron": "0 9 * * *"},
                     "jobData": {"SourceAddress": "a@example.com", "DestinationAddress": "b@example.com",
                                 "Subject": "s", "Message": "m"}})
    page.goto(f"{service.base}/ui/#/jobs")
    page.get_by_label("Type").select_option("SMS")
    page.get_by_label("Name starts with").fill("listed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("caption")).to_contain_text("25 jobs, page 1 of 2")
    page.get_by_role("link", name="Next page").click()
    expect(page.locator("caption")).to_contain_text("page 2 of 2")
    expect(page.locator("tbody tr")).to_have_count(5)
    assert "jobType=SMS" in page.url and "page=2" in page.url and "name=listed" in page.url
    page.reload()
    expect(page.locator("caption")).to_contain_text("25 jobs, page 2 of 2")
    expect(page.get_by_label("Type")).to_have_value("SMS")
    expect(page.get_by_label("Name starts with")).to_have_value("listed")


def test_the_edit_form_changes_a_job_and_shows_a_stale_version(service, page):
    job = create(service, sms("edited in the browser", {"cron": "0 9 * * *"}))
    page.goto(f"{service.base}/ui/#/jobs/{job['id']}/edit")
    expect(page.get_by_label("Cron", exact=True)).to_have_value("0 9 * * *")
    shoot(page, "edit-job")
    no_serious_violations(page, "edit")
    page.get_by_label("Cron", exact=True).fill("15 10 * * *")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("dl.fields")).to_contain_text("At 10:15, every day")
    assert service.call("GET", f"/api/v1/jobs/{job['id']}")[1]["schedule"]["cron"] == "15 10 * * *"


def test_at_phone_width_every_page_fits_the_screen(service, page):
    job = create(service, sms("seen on a phone", {"cron": "0 9 * * *"}))
    page.set_viewport_size({"width": 390, "height": 844})
    for name, route in [("overview", "#/"), ("jobs", "#/jobs"), ("job", f"#/jobs/{job['id']}"), ("new-job", "#/new")]:
        page.goto(f"{service.base}/ui/{route}")
        expect(page.locator("main h1")).to_be_visible()
        # The pages hold an event stream open, so the network is never idle: let them settle.
        page.wait_for_timeout(500)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} is {overflow}px wider than the screen"
        shoot(page, f"phone-{name}")


def token(role, subject):
    key = (ROOT / "tests/keys/rsa.key").read_text()
    now = int(time.time())
    return jwt.encode({"sub": subject, "role": role, "iat": now, "exp": now + 3600}, key, algorithm="RS256")


@pytest.fixture
def guarded():
    s = Service(["--auth-public-key-file", str(ROOT / "tests/keys/rsa.pub")])
    yield s
    s.stop()


def test_with_access_control_it_asks_for_a_token_and_shows_what_the_role_may_not_do(guarded, page):
    admin = token("admin", "ana")
    job = guarded.call("POST", "/api/v1/jobs", sms("guarded", {"cron": "0 9 * * *"}), token=admin)[1]
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{guarded.base}/ui/#/jobs/{job['id']}")
    expect(page.get_by_label("Access token (kept for this tab only)")).to_be_visible()
    expect(page.locator("#who")).to_have_text("a token is needed")
    viewer = token("viewer", "vic")
    page.get_by_label("Access token (kept for this tab only)").fill(viewer)
    page.get_by_role("button", name="Use token").click()
    expect(page.get_by_role("heading", name="guarded")).to_be_visible()
    expect(page.locator("#who")).to_have_text("signed in as viewer")
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()
    expect(page.get_by_text("(needs the operator role)").first).to_be_visible()
    expect(page.get_by_role("button", name="Delete")).to_be_disabled()
    expect(page.get_by_text("(needs the admin role)").first).to_be_visible()
    expect(page.locator("#live")).to_contain_text("live")
    # The stream carries the token in a header, never in a URL; the tab forgets it when closed.
    assert not [u for u in urls if viewer in u]
    assert page.evaluate("sessionStorage.getItem('scheduler.token')") == viewer
    assert page.evaluate("localStorage.length") == 0
    shoot(page, "job-as-viewer")
    # An operator may pause it.
    page.get_by_role("button", name="Token").click()
    page.get_by_label("Access token (kept for this tab only)").fill(token("operator", "ops"))
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#job-status")).to_have_text("PAUSED")
    assert guarded.call("GET", f"/api/v1/jobs/{job['id']}", token=admin)[1]["updatedBy"] == "ops"


def test_the_assets_are_served_from_the_binary_with_a_policy_that_allows_no_inline_script(service):
    import urllib.request
    with urllib.request.urlopen(f"{service.base}/ui/app.js") as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    sizes = sum(p.stat().st_size for p in (ROOT / "src/ui").iterdir() if p.suffix in (".html", ".js", ".css"))
    print(f"dashboard assets: {sizes} bytes")
