"""Helpers for the escalation integration tests: the Slack and PagerDuty
fakes wired to a daemon, and waits on a job's escalation rows."""

import json
import os
import re
import secrets
import time

from harness import RecoverydTestCase, lua_value  # harness puts tests/fakes on sys.path

from pagerduty_fake import PagerDutyFake  # noqa: E402
from slack_fake import SlackFake  # noqa: E402

EXTERNAL_URL = "https://recoveryd.example.invalid"
SINKS = ("slack", "pagerduty")
ESCALATION_FIELDS = ("id", "sink", "kind", "reason", "state", "attempts", "last_answer", "created_at",
                     "updated_at")


def job_url(job_id):
    return EXTERNAL_URL + "/ui/jobs/" + job_id


def new_routing_key():
    """A fresh 32-character routing key."""
    return secrets.token_hex(16)


def with_notify(src, notify):
    """Playbook source (from harness.playbook) with a `notify` field added."""
    marker = "return {\n"
    if marker not in src:
        raise ValueError("not a harness playbook source")
    return src.replace(marker, marker + "  notify = %s,\n" % lua_value(notify), 1)


def slack_escaped(url):
    """Forms a URL may take inside Slack mrkdwn (& < > escaped as entities)."""
    return {url, url.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}


def contains_url(text, url):
    return any(u in text for u in slack_escaped(url))


def strings_of(obj):
    """Every string found anywhere inside obj (keys excluded)."""
    out = []
    if isinstance(obj, dict):
        for v in obj.values():
            out.extend(strings_of(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(strings_of(v))
    elif isinstance(obj, str):
        out.append(obj)
    return out


def has_word(text, word):
    return re.search(r"(?<![\w.-])%s(?![\w-])" % re.escape(word), text) is not None


class EscalationTestCase(RecoverydTestCase):
    """RecoverydTestCase plus fakes of both sinks and a daemon wired to them."""

    retry_initial = 0.2
    retry_max = 1.0

    def setUp(self):
        super().setUp()
        self.routing_key = new_routing_key()

    def pagerduty(self, **kw):
        fake = PagerDutyFake(**kw).start()
        self.addCleanup(fake.stop)
        return fake

    def slack(self, **kw):
        fake = SlackFake(**kw).start()
        self.addCleanup(fake.stop)
        return fake

    def escalation_args(self, d_dir, pd=None, slack=None, routing_key=None, slack_url=None,
                        escalate_default=(), retry=None, external_url=EXTERNAL_URL):
        """Flags (and the secret files they name, written under d_dir) for
        the given fakes (pd may also be an events URL string). routing_key / slack_url override what is written
        to the files (e.g. a wrong-length key, a wrong path)."""
        sdir = os.path.join(d_dir, "escalation-secrets")
        os.makedirs(sdir, exist_ok=True)
        args = []
        if pd is not None or routing_key is not None:
            key = routing_key if routing_key is not None else self.routing_key
            path = os.path.join(sdir, "pagerduty-routing-key")
            _write_secret(path, key + "\n")
            args += ["--pagerduty-routing-key-file", path]
        if pd is not None:
            args += ["--pagerduty-url", pd if isinstance(pd, str) else pd.enqueue_url]
        if slack is not None or slack_url is not None:
            url = slack_url if slack_url is not None else slack.webhook_url
            path = os.path.join(sdir, "slack-webhook-url")
            _write_secret(path, url + "\n")
            args += ["--slack-webhook-url-file", path]
        if external_url:
            args += ["--external-url", external_url]
        for s in escalate_default:
            args += ["--escalate-default", s]
        initial, mx = retry or (self.retry_initial, self.retry_max)
        args += ["--escalation-retry-initial", str(initial), "--escalation-retry-max", str(mx)]
        return args

    def esc_daemon(self, playbooks, pd=None, slack=None, routing_key=None, slack_url=None,
                   escalate_default=(), retry=None, extra_args=(), start=True, subdir=None):
        d_dir = self.tmpdir if subdir is None else os.path.join(self.tmpdir, subdir)
        os.makedirs(d_dir, exist_ok=True)
        args = self.escalation_args(d_dir, pd, slack, routing_key, slack_url, escalate_default, retry)
        return self.daemon(playbooks, extra_args=args + list(extra_args), start=start, subdir=subdir)

    # -- the job record's escalations ---------------------------------
    @staticmethod
    def escalations(d, job_id, sink=None, kind=None):
        rows = d.job(job_id).get("escalations")
        if rows is None:
            raise AssertionError("job %s has no \"escalations\" member" % job_id)
        return [e for e in rows if (sink is None or e.get("sink") == sink)
                and (kind is None or e.get("kind") == kind)]

    def wait_escalations(self, d, job_id, predicate, timeout=10.0, what="escalations"):
        """Poll the job until predicate(escalation rows) is truthy; return the rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.escalations(d, job_id)
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                self.fail("job %s: %s not reached within %.0fs; escalations:\n%s\n%s"
                          % (job_id, what, timeout, json.dumps(rows, indent=1)[:4000], d.log_tail()))
            time.sleep(0.05)

    def wait_states(self, d, job_id, want, kind="trigger", timeout=10.0):
        """want: {sink: state}. Wait until, for each sink, the job has exactly
        one row of that kind and it is in that state; return {sink: row}."""
        def pred(rows):
            got = {}
            for sink, state in want.items():
                mine = [e for e in rows if e.get("sink") == sink and e.get("kind") == kind]
                if len(mine) != 1 or mine[0].get("state") != state:
                    return None
                got[sink] = mine[0]
            return got
        rows = self.wait_escalations(d, job_id, pred, timeout, "%s rows %r" % (kind, want))
        return pred(rows)

    def assertEscalationRow(self, row, sink, kind, reason=None, state=None):
        for f in ESCALATION_FIELDS:
            self.assertIn(f, row, "escalation row lacks %r: %r" % (f, row))
        self.assertIsInstance(row["id"], str, row)
        self.assertTrue(row["id"], row)
        self.assertEqual(row["sink"], sink, row)
        self.assertEqual(row["kind"], kind, row)
        if reason is not None:
            self.assertEqual(row["reason"], reason, row)
        if state is not None:
            self.assertEqual(row["state"], state, row)
        self.assertIsInstance(row["attempts"], int, row)
        self.assertIsNotNone(row["created_at"], row)
        self.assertIsNotNone(row["updated_at"], row)

    def assertQuiet(self, fakes, seconds=1.0, counts=None):
        """Nothing more arrives at the fakes for `seconds` (counts: the
        expected totals, default: what they have now)."""
        before = counts or [f.count() for f in fakes]
        time.sleep(seconds)
        after = [f.count() for f in fakes]
        self.assertEqual(after, before, "unexpected requests: %r" % ([f.requests() for f in fakes],))


def _write_secret(path, value):
    with open(path, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)
