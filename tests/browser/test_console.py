"""The web console (docs/console.md) in headless Chromium, driven with
Selenium against the real binary: sign-in, the jobs list, one job's
timeline, cancel, approvals, playbooks (pause, dry-run), the pause of
everything, what a viewer may do, and labels shown as text.

One daemon and one browser serve the whole class (starting Chromium is the
slow part); each test uses alerts of its own and signs in afresh.

Environment: the integration harness's (RECOVERYD_BIN, ...), plus
  RECOVERYD_SCREENSHOTS=DIR   save a desktop and a phone screenshot of each
                              page there (docs/console/ holds a set)
  CHROMIUM_BIN, CHROMEDRIVER  other programs than Debian's chromium and
                              chromium-driver (scripts/deps.sh)
"""

import base64
import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_INTEGRATION = os.path.normpath(os.path.join(HERE, "..", "integration"))
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

import harness  # noqa: E402  (puts tests/fakes on sys.path)
from harness import Recoveryd, lua_value, playbook, variant  # noqa: E402
from recorder import Recorder  # noqa: E402

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = os.environ.get("RECOVERYD_SCREENSHOTS")
WAIT = 15.0  # seconds any one thing may take to show in the page
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
SHOT_HEIGHT = 1800

PRINCIPALS = {
    "olga": ("operator", "console-operator-token-0123456789"),
    "vic": ("viewer", "console-viewer-token-0123456789"),
    "sam": ("operator", "console-scoped-token-0123456789", "slow"),
}


def _with(src, name, value):
    marker = "return {\n"
    return src.replace(marker, marker + "  %s = %s,\n" % (name, lua_value(value)), 1)


def playbooks(fake):
    common = dict(fake=fake, cooldown=0, budget={"runs": 1000, "per": 60})
    slow = playbook("slow", '''
recovery.log.info("restarting", {service = ctx.alert.labels.service})
must(recovery.http{method = "GET", url = FAKE .. "/state"})
must(recovery.exec{"/bin/echo", "checked", ctx.alert.labels.instance or "-"})
recovery.sleep(60)
''', match=['alertname="ConsoleSlow"'], timeout=120, **common)
    gated = _with(playbook("gated", '''
must(recovery.http{method = "GET", url = FAKE .. "/state"})
must(recovery.http{method = "POST", url = FAKE .. "/rollback", json = {job = ctx.job.id}})
''', match=['alertname="ConsoleGated"'], **common), "approval", {"required": True, "timeout": 900})
    restart = playbook("restart", '''
must(recovery.http{method = "GET", url = FAKE .. "/health"})
must(recovery.http{method = "POST", url = FAKE .. "/restart/" .. ctx.alert.labels.service})
''', verify='return true, "health answered 200"', match=['alertname="ConsoleRestart"'],
                       description="Restart a service and check its health", **common)
    pausable = playbook("pausable", "recovery.log.info('ran')", match=['alertname="ConsolePausable"'],
                        **common)
    return {"slow": slow, "gated": gated, "restart": restart, "pausable": pausable}


def alert(alertname, **labels):
    """A v4 payload with one firing alert of its own fingerprint."""
    return variant("firing-single.json", alertname=alertname, **labels)


class ConsoleTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if webdriver is None:
            raise unittest.SkipTest("python3-selenium is not installed (scripts/deps.sh)")
        for prog in (CHROMIUM, CHROMEDRIVER):
            if not os.access(prog, os.X_OK):
                raise unittest.SkipTest("%s is missing (scripts/deps.sh)" % prog)
        if not harness.binary():
            raise unittest.SkipTest("RECOVERYD_BIN is not set (run through ctest)")
        cls.tmpdir = tempfile.mkdtemp(prefix="recoveryd-ui-")
        if os.environ.get("RECOVERYD_KEEP_TMP") != "1":
            cls.addClassCleanup(shutil.rmtree, cls.tmpdir, ignore_errors=True)
        cls.fake = Recorder().start()
        cls.addClassCleanup(cls.fake.stop)
        cls.d = Recoveryd(cls.tmpdir, playbooks(cls.fake), extra_args=["--exec-allow", "/bin/echo"],
                          start=False)
        cls.d.set_principals(PRINCIPALS)
        cls.addClassCleanup(cls._stop_daemon)
        cls.d.start()

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,1000", "--lang=en-US"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        cls.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        cls.addClassCleanup(cls.driver.quit)
        if SHOTS:
            os.makedirs(SHOTS, exist_ok=True)

    @classmethod
    def _stop_daemon(cls):
        cls.d.stop(grace=5)
        reports = cls.d.sanitizer_reports()
        if reports:
            raise AssertionError("the daemon's sanitizer reported:\n" + "\n".join(reports)[:6000])

    def setUp(self):
        self.br = self.driver
        self.open("/ui/")
        self.br.execute_script("sessionStorage.clear()")
        self.br.get_log("browser")  # what earlier tests left
        self.addCleanup(self.no_script_errors)

    def no_script_errors(self):
        """No exception in the console's script and nothing the page did
        was blocked by its Content-Security-Policy (refused API calls are
        logged too, and are fine)."""
        bad = [e["message"] for e in self.br.get_log("browser")
               if "Uncaught" in e["message"] or "Content Security Policy" in e["message"]]
        self.assertEqual(bad, [], "the browser's console")

    # ------------------------------------------------------------ helpers

    def open(self, path):
        self.br.get(self.d.url + path)

    def wait(self, cond, what):
        try:
            return WebDriverWait(self.br, WAIT, poll_frequency=0.1).until(lambda br: cond())
        except TimeoutException:
            self.fail("not within %.0fs: %s\npage text:\n%s\n%s" % (
                WAIT, what, self.br.find_element(By.TAG_NAME, "body").text[:3000], self.d.log_tail(20)))

    def find(self, css):
        return self.wait(lambda: self._visible(css), "%s is shown" % css)

    def _visible(self, css):
        for e in self.br.find_elements(By.CSS_SELECTOR, css):
            if e.is_displayed():
                return e
        return None

    def text_of(self, css):
        e = self._visible(css)
        return e.text if e else ""

    def wait_text(self, css, *texts):
        self.wait(lambda: all(t in self.text_of(css) for t in texts),
                  "%s shows %r" % (css, texts))
        return self.text_of(css)

    def click(self, css):
        self.find(css).click()

    def sign_in(self, who):
        self.open("/ui/")
        self.find("#token").send_keys(PRINCIPALS[who][1])
        self.click("#signin")
        self.find("header#top")

    def confirm(self, reason, ok=True):
        """Fill the open action dialog and press its OK button."""
        self.find("#dialog[open]")
        box = self.find("#dialog-reason")
        box.clear()
        box.send_keys(reason)
        if ok:
            self.click("#dialog-ok")

    def dialog_closed(self):
        self.wait(lambda: not self.br.find_elements(By.CSS_SELECTOR, "#dialog[open]"), "the dialog closes")

    def shot(self, name):
        """Screenshots of the page at desktop and phone width (when
        RECOVERYD_SCREENSHOTS is set). At phone width, whatever the
        setting, the page must not scroll sideways: only wide tables do,
        inside their own box."""
        if SHOTS:
            self._save(name + ".png")
        self.br.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        try:
            self.wait(lambda: self.br.execute_script("return window.innerWidth") == PHONE["width"],
                      "the phone width applies")
            over = self.br.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            self.assertLessEqual(over, 0, "the %s page scrolls sideways at %dpx" % (name, PHONE["width"]))
            if SHOTS:
                self._save(name + "-phone.png")
        finally:
            self.br.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def _save(self, name):
        """The whole page (up to SHOT_HEIGHT CSS pixels), not just the window."""
        m = self.br.execute_cdp_cmd("Page.getLayoutMetrics", {})
        width = m["cssLayoutViewport"]["clientWidth"]
        height = min(m["cssContentSize"]["height"], SHOT_HEIGHT)
        img = self.br.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        with open(os.path.join(SHOTS, name), "wb") as f:
            f.write(base64.b64decode(img["data"]))

    def webhook(self, payload):
        return self.d.webhook(payload)["jobs"][0]["id"]

    def cancel_quietly(self, job):
        self.d.request("POST", "/api/v1/jobs/%s/cancel" % job, {"reason": "test cleanup"})

    # ------------------------------------------------------------ tests

    def test_a_wrong_token_is_refused(self):
        self.find("#token").send_keys("not-the-token-of-anybody")
        self.click("#signin")
        self.wait_text("#signin-error", "refused", "401")
        self.assertFalse(self.br.find_element(By.ID, "top").is_displayed())
        self.assertIsNone(self.br.execute_script("return sessionStorage.getItem('recoveryd.token')"))
        self.shot("signin")
        # A token that stops working mid-session (a reload of the tokens
        # file) sends the user back to sign in, saying why.
        self.br.execute_script("sessionStorage.setItem('recoveryd.token', 'revoked-token')")
        self.open("/ui/jobs")
        self.wait_text("#signin-error", "refused your token", "401")

    def test_approve_a_held_plan(self):
        job = self.webhook(alert("ConsoleGated", instance="approve"))
        self.d.wait_job(job, {"awaiting_approval"}, timeout=10)
        self.sign_in("olga")
        self.wait(lambda: self.text_of("#approval-count") != "", "the header counts the held job")
        self.click("nav a[href='/ui/approvals']")
        card = "section.approval[data-job='%s']" % job
        self.wait_text(card, "gated", "http POST %s/rollback" % self.fake.url, "instance=approve")
        self.assertEqual(self.fake.count("POST", "/rollback"), 0)
        self.shot("approvals")
        self.click(card + " button.approve")
        self.wait_text("#dialog-plan", "http POST %s/rollback" % self.fake.url)
        self.confirm("plan matches INC-7")
        self.dialog_closed()
        rec = self.d.wait_job(job)
        self.assertEqual((rec["state"], rec["approval"]["approved_by"]), ("succeeded", "olga"), rec)
        self.assertEqual(self.fake.count("POST", "/rollback"), 1)
        self.wait_text("#approvals", "Nothing awaits approval")

    def test_dry_run_trigger_shows_the_plan(self):
        self.sign_in("olga")
        self.click("nav a[href='/ui/playbooks']")
        pb = "section.playbook[data-playbook='restart']"
        self.wait_text(pb, "Restart a service", "alertname=\"ConsoleRestart\"", "1000 runs per 60 s")
        self.click(pb + " details.dry summary")
        self.find(pb + " textarea.dry-labels").send_keys("alertname=ConsoleRestart\nservice=checkout")
        self.find(pb + " input.dry-reason").send_keys("trying the console")
        self.click(pb + " button.dry-run")
        text = self.wait_text(pb + " .plan-result", "dry_run_succeeded", "health answered 200",
                              "POST %s/restart/checkout" % self.fake.url, "PLANNED")
        self.assertIn("GET %s/health" % self.fake.url, text)
        self.assertEqual(self.fake.count("POST", "/restart/checkout"), 0)
        self.shot("playbooks")

    def test_job_appears_shows_its_timeline_and_is_cancelled(self):
        self.sign_in("olga")
        self.find("#jobs-table, #jobs p")
        job = self.webhook(alert("ConsoleSlow", instance="cancel-me", service="checkout"))
        row = "tr[data-job='%s']" % job
        self.wait_text(row, "slow", "running")  # the live refresh brings it
        self.shot("jobs")
        self.click(row + " a")
        self.wait(lambda: self.br.current_url.endswith("/ui/jobs/" + job), "the job's own URL")
        self.wait_text("#timeline", "Attempt 1", "GET %s/state" % self.fake.url, "200",
                       "/bin/echo checked cancel-me", "exit 0", "restarting", "sleep 60 s")
        self.wait_text("#job", "alertname=ConsoleSlow", "service=checkout", "webhook")
        self.shot("job")
        self.click("#cancel")
        self.confirm("INC-42: restarting by hand")
        self.dialog_closed()
        self.wait_text("h1 .job-state", "cancelled")
        self.wait_text("#job-error", "cancelled by olga: INC-42: restarting by hand")
        self.wait_text("#events", "cancel", "olga (operator)", "INC-42: restarting by hand")
        self.assertEqual(self.d.job(job)["state"], "cancelled")
        self.assertFalse(self.br.find_elements(By.CSS_SELECTOR, "#cancel"), "an ended job has no cancel")

    def test_filters_and_older_pages(self):
        for n in range(3):
            st, _, doc = self.d.trigger("restart", {"labels": {"alertname": "ConsolePaging", "service": "s%d" % n}},
                                        query="dry_run=1&wait=30")
            self.assertEqual(st, 200, doc)
        # The list's alertname filter and its Link pages came with the same
        # change as the console; a server without them cannot be paged.
        st, hdrs, doc = self.d.request("GET", "/api/v1/jobs?alertname=ConsolePaging&limit=2")
        if not hdrs.get("Link"):
            self.skipTest("this server does not page GET /api/v1/jobs (no Link header)")
        self.sign_in("olga")
        self.open("/ui/jobs?alertname=ConsolePaging&limit=2")
        self.wait(lambda: len(self.br.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")) == 2, "a page of 2")
        first = {e.get_attribute("data-job") for e in self.br.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")}
        self.assertEqual(self.find("#f-alertname").get_attribute("value"), "ConsolePaging")
        self.wait(lambda: self.find("#older").is_enabled(), "a next page is offered")
        self.click("#older")  # follows the Link header
        self.wait_text("#jobs-status", "Page 2")
        rows = self.br.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")
        self.assertEqual(len(rows), 1)
        self.assertNotIn(rows[0].get_attribute("data-job"), first)
        self.assertFalse(self.find("#older").is_enabled())
        self.click("#newer")
        self.wait_text("#jobs-status", "Page 1", "live")
        self.click("#live")  # the live refresh pauses, and says so
        self.wait_text("#jobs-status", "paused")
        self.click("#live")
        self.wait_text("#jobs-status", "live")
        # The form puts its filters in the page's URL.
        self.find("#f-state option[value='running']").click()
        self.click("#job-filters button[type=submit]")
        self.wait(lambda: "state=running" in self.br.current_url and "limit=2" in self.br.current_url,
                  "the filters in the URL")
        self.wait_text("#jobs", "No jobs match")
        # A value the server refuses is shown, with its answer.
        self.open("/ui/jobs?limit=0")
        self.wait_text("#jobs-error", "Cannot list the jobs", "400 invalid_request", "limit")

    def test_labels_are_shown_as_text(self):
        evil = '<img src=x onerror="window.pwned=1"><b id="injected">x</b>'
        job = self.webhook(alert("ConsoleSlow", instance="xss", payload=evil))
        self.addCleanup(self.cancel_quietly, job)
        self.sign_in("olga")
        self.open("/ui/jobs/" + job)  # a deep link
        self.wait_text("#job", "payload=" + evil)
        self.assertFalse(self.br.find_elements(By.CSS_SELECTOR, "#injected, #job img"))
        self.assertIsNone(self.br.execute_script("return window.pwned"))

    def test_pause_everything_then_resume(self):
        self.addCleanup(self.d.request, "POST", "/api/v1/resume", {})
        self.sign_in("olga")
        self.click("#pause-all")
        self.confirm("INC-77: automation makes it worse")
        self.dialog_closed()
        self.wait_text("#global-pause", "Everything is paused", "olga", "INC-77: automation makes it worse")
        st, _, pbs = self.d.request("GET", "/api/v1/playbooks")
        self.assertTrue(all((p["paused"] or {}).get("scope") == "*" for p in pbs), pbs)
        self.wait_text("#pause-all", "Resume everything")
        self.click("#pause-all")
        self.confirm("", ok=True)
        self.dialog_closed()
        self.wait(lambda: not self._visible("#global-pause"), "the pause banner goes")
        st, _, pbs = self.d.request("GET", "/api/v1/playbooks")
        self.assertEqual([p["paused"] for p in pbs], [None] * len(pbs))
        # Sign out: the token leaves the tab.
        self.click("#signout")
        self.find("#token")
        self.assertIsNone(self.br.execute_script("return sessionStorage.getItem('recoveryd.token')"))

    def test_pause_one_playbook_then_resume(self):
        self.addCleanup(self.d.request, "POST", "/api/v1/playbooks/pausable/resume", {})
        self.sign_in("olga")
        self.open("/ui/playbooks")
        pb = "section.playbook[data-playbook='pausable']"
        self.wait_text(pb + " .pb-state", "active")
        self.click(pb + " button.pause")
        self.confirm("DB migration")
        self.dialog_closed()
        self.wait_text(pb + " .pb-state", "paused")
        self.wait_text(pb + " .pause-info", "olga", "DB migration")
        st, _, pbs = self.d.request("GET", "/api/v1/playbooks")
        paused = {p["name"]: p["paused"] for p in pbs}
        self.assertEqual((paused["pausable"]["by"], paused["pausable"]["reason"]), ("olga", "DB migration"))
        self.assertIsNone(paused["slow"])
        self.click(pb + " button.resume")
        self.confirm("done")
        self.dialog_closed()
        self.wait_text(pb + " .pb-state", "active")

    def test_a_viewer_reads_but_is_offered_no_action(self):
        job = self.webhook(alert("ConsoleSlow", instance="viewer"))
        self.addCleanup(self.cancel_quietly, job)
        self.d.wait_job(job, {"running"}, timeout=10)
        self.sign_in("vic")
        self.wait_text("#whoami", "vic (viewer)")
        self.assertFalse(self.find("header#top").find_element(By.ID, "pause-all").is_displayed())
        self.open("/ui/jobs/" + job)
        self.wait_text("#timeline", "Attempt 1")
        self.assertIsNone(self._visible("#cancel"), "a viewer is offered no cancel")
        self.open("/ui/playbooks")
        self.find("#pb-slow")
        self.assertIsNone(self._visible("#pb-slow button.pause"))
        self.assertIsNone(self._visible("#pb-slow .dry-run"))
        # The server is the gate all the same.
        st, _, doc = self.d.request("POST", "/api/v1/jobs/%s/cancel" % job, {"reason": "x"}, token="vic")
        self.assertEqual((st, doc["error"]), (403, "forbidden"))
        self.assertEqual(self.d.job(job)["state"], "running")

    def test_an_operator_limited_to_playbooks_acts_on_those_only(self):
        job = self.webhook(alert("ConsoleSlow", instance="scoped"))
        self.addCleanup(self.cancel_quietly, job)
        self.d.wait_job(job, {"running"}, timeout=10)
        self.sign_in("sam")
        self.wait_text("#whoami", "sam (operator)")
        self.assertFalse(self.find("header#top").find_element(By.ID, "pause-all").is_displayed(),
                         "pausing everything needs a principal limited to no playbook")
        self.open("/ui/playbooks")
        self.find("#pb-slow button.pause")
        self.assertIsNone(self._visible("#pb-pausable button.pause"))
        self.open("/ui/jobs/" + job)
        self.click("#cancel")
        self.confirm("scoped operator")
        self.dialog_closed()
        self.assertEqual(self.d.wait_job(job, timeout=10)["state"], "cancelled")


if __name__ == "__main__":
    unittest.main()
