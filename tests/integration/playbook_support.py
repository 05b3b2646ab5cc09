"""Support for the tests of the shipped playbooks (settings-sync-recovery,
kong-deck-rollback): the shipped file, a recoveryd config file with
`playbook_settings`, the decK stand-in's log and scenario, and capture of job
records. Python 3 standard library only."""

import json
import os
import re
import sys
import threading
import time

from harness import FAKES_DIR, SOURCE_DIR, lua_value

if FAKES_DIR not in sys.path:
    sys.path.insert(0, FAKES_DIR)

PLAYBOOKS_DIR = os.path.join(SOURCE_DIR, "playbooks")
FIXTURES_DIR = os.path.join(SOURCE_DIR, "tests", "fixtures")
DECK = os.path.join(FAKES_DIR, "deck")

# A fast backoff for tests that go through retries. Top-level fields of a
# playbook are not settings (they are read when the set is loaded), so this is
# the only text the tests change in a shipped playbook.
FAST_BACKOFF = {"backoff": {"initial": 0.1, "factor": 1, "max": 0.1}}


def shipped_playbook(name, fields=None):
    """The text of playbooks/<name>.lua, optionally with top-level fields of
    the returned table (`  key = value,` lines, indented two spaces)
    replaced. Each field must exist exactly once."""
    path = os.path.join(PLAYBOOKS_DIR, name + ".lua")
    with open(path) as f:
        src = f.read()
    for key, value in (fields or {}).items():
        pat = re.compile(r"^(  )(%s)\s*= .*,(\s*--.*)?$" % re.escape(key), re.M)
        src, n = pat.subn(lambda m: "%s%s = %s," % (m.group(1), key, lua_value(value)), src)
        if n != 1:
            raise AssertionError("field %r found %d times in %s" % (key, n, path))
    return src


def write_config(path, playbook_settings, **top):
    """A recoveryd config file: `return { <top keys>, playbook_settings = {...} }`."""
    doc = dict(top)
    doc["playbook_settings"] = playbook_settings
    with open(path, "w") as f:
        f.write("-- written by a test\nreturn " + lua_value(doc) + "\n")
    return path


def alert_doc(fixture_name, labels=None, generator_expr=None, drop_generator=False):
    """A copy of a fixture whose first alert has some labels changed (and a
    fingerprint to match) and optionally another generatorURL expression."""
    import urllib.parse
    from harness import fingerprint
    with open(os.path.join(FIXTURES_DIR, fixture_name)) as f:
        doc = json.load(f)
    a = doc["alerts"][0]
    if labels:
        for k, v in labels.items():
            if v is None:
                a["labels"].pop(k, None)
            else:
                a["labels"][k] = v
    if generator_expr is not None:
        a["generatorURL"] = "http://prometheus.monitoring.svc:9090/graph?g0.expr=%s&g0.tab=1" % (
            urllib.parse.quote_plus(generator_expr))
    if drop_generator:
        a["generatorURL"] = ""
    a["fingerprint"] = fingerprint(a["labels"])
    doc["commonLabels"] = dict(a["labels"])
    return doc


def capture(name, rec):
    """With RECOVERYD_CAPTURE_DIR set, keep a job record as <name>.json there."""
    d = os.environ.get("RECOVERYD_CAPTURE_DIR")
    if d:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump(rec, f, indent=1)


def log_text(rec):
    return "\n".join(l.get("msg", "") for l in rec.get("log") or [])


def planned(rec):
    """(kind, method or argv[1:3]) of the planned actions, in order."""
    out = []
    for a in rec.get("actions") or []:
        if a.get("planned"):
            out.append(a)
    return out


class DeckFake:
    """The decK stand-in's environment in a directory: DECK_FAKE_LOG (one JSON
    line per call) and DECK_FAKE_SCENARIO (outcomes per subcommand)."""

    def __init__(self, directory, scenario=None):
        os.makedirs(directory, exist_ok=True)
        self.log_path = os.path.join(directory, "deck.log")
        self.scenario_path = os.path.join(directory, "deck-scenario.json")
        self.set_scenario(scenario or {})
        self._watchers = []

    def set_scenario(self, scenario):
        with open(self.scenario_path, "w") as f:
            json.dump(scenario, f)
        try:
            os.unlink(self.scenario_path + ".state")
        except OSError:
            pass

    def env(self):
        return {"DECK_FAKE_LOG": self.log_path, "DECK_FAKE_SCENARIO": self.scenario_path}

    def calls(self, sub=None):
        try:
            with open(self.log_path) as f:
                lines = [json.loads(l) for l in f if l.strip()]
        except OSError:
            return []
        return [c for c in lines if sub is None or c.get("sub") == sub]

    def subs(self):
        return [c.get("sub") for c in self.calls()]

    def on_call(self, sub, fn, timeout=60.0):
        """Call fn() once (in a thread) when the first `sub` call is logged;
        gives up after timeout seconds."""
        stop = threading.Event()

        def loop():
            deadline = time.monotonic() + timeout
            while not stop.is_set() and time.monotonic() < deadline:
                if self.calls(sub):
                    fn()
                    return
                time.sleep(0.05)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self._watchers.append((stop, t))
        return stop

    def stop(self):
        for stop, t in self._watchers:
            stop.set()
            t.join(timeout=2)
        self._watchers = []
