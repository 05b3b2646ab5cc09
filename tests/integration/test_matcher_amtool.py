"""Differential test of regex matchers: recoveryd against the real Alertmanager.

Alertmanager's matchers are Go regexps (RE2 syntax, fully anchored as
^(?:re)$); recoveryd compiles them with RE2 (src/re2_shim.cc). This test
generates, with a fixed seed, a few thousand (operator, pattern, label value)
triples - newlines, multi-byte UTF-8 and emoji, anchors, alternation, classes,
repetition, escapes, (?i) / (?s) / (?m) - and checks that both programs take
the same decision:

- Which patterns are valid: `amtool check-config` on a one-route config per
  pattern, against tests/tools/matcher_eval (the daemon's matcher code).
- Whether a value matches: one alertmanager.yml per batch whose root route has
  one child per triple (a single matcher on its own label l<i>, its own
  receiver r<i>, `continue: true`), and one `amtool config routes test` call
  with every l<i>=value of the batch; amtool prints the receivers of all
  matching children, i.e. the triples that match.

Known, deliberate divergences are listed in DIVERGENT with the reason; any
other difference fails the test. VALID and INVALID are what Debian 12's
Alertmanager (0.25, built with Go 1.19) and RE2 agree on; a newer Go may
accept more (Go 1.22 added (?<name>...)), which this test then reports.

What amtool cannot express, so is left out here and covered by
tests/unit/test_matcher.c instead:
- invalid UTF-8 in a value: amtool's (and the config's) matcher parser refuses
  it, and Alertmanager's JSON decoder turns each invalid byte into U+FFFD
  before matching (recoveryd's regex matching does the same);
- NUL bytes: recoveryd's label values are C strings.

Needs amtool (Debian prometheus-alertmanager, installed by scripts/deps.sh)
and RECOVERYD_MATCHER_EVAL (set by ctest); skipped without them.
"""

import concurrent.futures
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import unittest

SEED = 20250601
BATCH = 200          # routes per alertmanager.yml / labels per amtool call
WORKERS = 8          # amtool processes at once
MIN_PAIRS = 300      # the test is worthless with fewer

# Patterns both sides must accept.
VALID = [
    # '.' and newlines
    r"a.b", r".*", r".+", r".", r"..", r"...", r"settings.*", r".*evil.*", r"(?s).*evil.*",
    r"(?s)settings.*", r"(?s:.)+", r"[^\n]+", r"[\n]", r"\n", r"a\nb", r"a\n?b", r"\t", r"a\tb",
    r"a\sb", r"[^x]+",
    # classes
    r"caf.", r"caf\w", r"caf\pL", r"caf[^a-z]", r"\w+", r"\W", r"\d+", r"\D+", r"\s", r"\S+",
    r"[[:alpha:]]+", r"[[:^digit:]]*", r"[[:space:]]", r"[[:word:]]+", r"[\D]+", r"[a\-z]",
    r"[]a]", r"[^]a]", r"[a-c]+", r"[^a-c]+", r"[.]", r"[\\\"]+",
    # anchors and alternation
    r"^abc$", r"^a|b$", r"a|b", r"a|bc|", r"(a|b)+", r"(?:ab)*", r"(a|ab)(c|bcd)(d*)",
    r"(?m)^a$", r"(?m)a$", r"(?m)^b", r"(?m)a$\n^b", r"\A.\z", r"a$", r"^", r"$", r"^$", r"",
    r"(?:)", r"()", r"\bfoo\b", r"foo\b.*", r"\Bb\B", r"x\b", r"a\B",
    # repetition
    r"a{2,3}", r"a{2,}", r"a{0}", r"(ab){1,2}c?", r"a*?b", r"a+?", r"(?U)a+b", r"a{1000}",
    r"((a{10}){10}){10}", r"a{,3}", r"(.+)+", r"(.*)*b", r"((((.+)+)+)+)+",
    # case folding
    r"(?i)prod", r"(?i)café", r"(?i)CAFÉ", r"(?i)k", r"(?i)ß", r"(?i)straße", r"(?i)[a-z]+",
    r"(?i:a)b", r"(?i)ω", r"(?i)é",
    # Unicode classes and escapes
    r"\pL+", r"\p{L}", r"\p{Greek}+", r"\PL+", r"\p{Han}+", r"[\p{Lu}]+", r"\pN+", r"[\pL\pN]+",
    r"\p{So}", r"\x{e9}", r"\x41", r"\x{1F600}", r"\x{fffd}", r"\Q.*\E", r"\Q\C\E", r"\.",
    r"\\", r"\"", r"\(\)", r"\$\^", r"\<a\>", r"\141", r"\0",
    # literal multi-byte text
    r"😀+", r".😀.", r"[😀-😂]", r"é+", r"[é]", r"[^é]", r"e\x{301}", r"中.",
    # named groups
    r"(?P<n>x)y", r"(?P<n>a)|(?P<n>b)", r"(?P<1n>x)",
]

# Patterns both sides must refuse.
INVALID = [
    r"a{1001}", r"x{1001,}", r"(a{1000}){1000}", r"(", r"[a", r"a)", r"x**", r".++",
    r".++++++++++++++++++++++++", r"x{2}{3}", r"\C", r"[\C]", r"a\C", r"\1", r"\8", r"(?<n>x)",
    r"(?P<n-1>x)", r"(?=a)", r"(?!a)", r"\Z", r"[z-a]", r"\pX", r"\p{Nope}", r"(?z)", r"(?i",
    r"a{2,1}", r"*", r"+a", r"[[:foo:]]", "\\", r"\x{110000}", r"\xZ",
]

# pattern -> (Alertmanager accepts, recoveryd accepts, why they differ)
DIVERGENT = {
    r"a)|(b": (True, False,
               "Alertmanager wraps it as ^(?:a)|(b)$, which is no longer anchored (it matches "
               "'a...' and '...b'); recoveryd refuses unbalanced parentheses so a matcher always "
               "means the whole value"),
    r"x)(y": (True, False, "same: ^(?:x)(y)$ only parses thanks to the wrapping"),
    r"\pL{1000}": (True, False,
                   "Go's limit on program size is larger than RE2_SHIM_MAX_MEM: recoveryd "
                   "refuses it at load time with 'pattern too large' instead of compiling it"),
}

VALUES = [
    "", "a", "b", "ab", "ba", "aa", "aaa", "aab", "abc", "ABC", "abab", "abcd", "abbbc", "x", "xy",
    "a\nb", "a\n", "\na", "\n", "\n\n", "a\tb", "\t", " ", "a b", "\r\n", "aéb", "a😀b",
    "settings", "settings-x", "settings\nevil", "ok\nevil", "evil", "ok-evil", "prod", "PROD",
    "Prod", "café", "CAFÉ", "cafe", "cafe\u0301", "e\u0301", "é", "É", "e", "E", "K", "k",
    "\u212a", "ß", "ẞ", "SS", "straße", "STRASSE", "ω", "Ω", "😀", "😁😀", "😃", "中文", "中",
    "αβγ", "123", "12a", "1", "x.y", "xay", ".*", "\\C", "\\", "\"", "\\\"", "()", "$^", "<a>",
    "foo", "foo bar", "foobar", "bbb", "A", "\ufffd", "\u00a0", "€", "]", "-",
]
RANDOM_ALPHABET = list("abcxXK1 .-\\\"]") + ["\n", "\t", "é", "É", "😀", "中", "\u212a", "ß"]


RANDOM_PATTERNS = 200
# Atoms of generated patterns; values are built from similar pieces.
RANDOM_ATOMS = ["a", "b", "x", "K", "é", "😀", "中", ".", ".", r"\n", r"\d", r"\w", r"\s", r"\S",
                r"\W", "[ab]", "[^a]", "[a-c]", "[é😀]", "[^\\n]", r"\pL", r"\p{Greek}", r"\x{e9}",
                r"\.", "^", "$", r"\b", r"\B", r"\A", r"\z", "\u212a", "ß", "[[:alpha:]]", " "]
RANDOM_QUANT = ["", "", "", "*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "+?", "??", "**"]
RANDOM_FLAGS = ["", "", "", "(?i)", "(?s)", "(?m)", "(?is)", "(?U)", "(?i:"]
RANDOM_VALUE_ATOMS = ["a", "b", "x", "K", "k", "é", "É", "😀", "中", "\n", "\t", " ", "1", ".",
                      "\u212a", "ß", "SS", "ab", "α", "\\"]


def random_pattern(rng, depth=0):
    """A regex from a small grammar: alternation of concatenations of
    quantified atoms or groups, maybe under a flag. "**" makes some invalid."""
    alts = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        terms = []
        for _ in range(rng.randint(1, 4)):
            if depth < 2 and rng.random() < 0.2:
                atom = rng.choice(["(", "(?:", "(?s:", "(?i:"]) + random_pattern(rng, depth + 1) + ")"
            else:
                atom = rng.choice(RANDOM_ATOMS)
            terms.append(atom + rng.choice(RANDOM_QUANT))
        alts.append("".join(terms))
    flag = rng.choice(RANDOM_FLAGS) if depth == 0 else ""
    return flag + "|".join(alts) + (")" if flag.endswith(":") else "")


def random_value(rng, atoms=None, n=8):
    atoms = atoms or RANDOM_ALPHABET
    return "".join(rng.choice(atoms) for _ in range(rng.randint(0, n)))


def random_op(rng):
    return "!~" if rng.random() < 0.3 else "=~"


def go_quote(s):
    """A Go double-quoted string, for recoveryd's matcher parser."""
    out = ['"']
    for ch in s:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out) + '"'


def am_quote(s):
    """A quoted matcher value for Alertmanager 0.25's parser (config
    `matchers:` and amtool's label arguments): it unescapes only \\n, \\" and
    \\\\, anything else is taken as is."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def yaml_str(s):
    """A YAML double-quoted scalar; control characters escaped."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)
        elif o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029, 0xFEFF):
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    return "".join(out) + '"'


def expressible(v):
    """None (label missing) or a value amtool can pass: no NUL (see above)."""
    return v is None or "\0" not in v


class MatcherAmtoolTest(unittest.TestCase):

    def setUp(self):
        self.amtool = shutil.which("amtool")
        if not self.amtool:
            self.skipTest("amtool not found (Debian package prometheus-alertmanager)")
        self.eval_bin = os.environ.get("RECOVERYD_MATCHER_EVAL")
        if not self.eval_bin:
            self.skipTest("RECOVERYD_MATCHER_EVAL is not set (run through ctest)")
        self.tmp = tempfile.mkdtemp(prefix="recoveryd-amtool-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    # ------------------------------------------------------------ recoveryd

    def recoveryd(self, queries):
        """[(matcher text, labels dict)] -> [True | False | "error text"]."""
        lines = "".join(json.dumps({"matcher": m, "labels": ls}, ensure_ascii=False) + "\n"
                        for m, ls in queries)
        p = subprocess.run([self.eval_bin], input=lines.encode("utf-8"), capture_output=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        out = [json.loads(l) for l in p.stdout.decode("utf-8", "replace").splitlines()]
        self.assertEqual(len(out), len(queries))
        return [o["match"] if "match" in o else o["error"] for o in out]

    # --------------------------------------------------------- alertmanager

    def write_config(self, name, routes):
        """routes: [(label, op, pattern)]; child i sends to receiver r<i>."""
        lines = ["route:", "  receiver: default", "  routes:"]
        for i, (label, op, pat) in enumerate(routes):
            lines += ["    - receiver: r%d" % i,
                      "      continue: true",
                      "      matchers:",
                      "        - " + yaml_str(label + op + am_quote(pat))]
        lines += ["receivers:", "  - name: default"]
        lines += ["  - name: r%d" % i for i in range(len(routes))]
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def am_accepts(self, name, pat):
        path = self.write_config(name, [("l", "=~", pat)])
        p = subprocess.run([self.amtool, "check-config", path], capture_output=True, timeout=60)
        return p.returncode == 0, p.stdout.decode("utf-8", "replace")

    def am_matches(self, name, batch):
        """batch: [(op, pattern, value or None)] -> set of matching indexes."""
        path = self.write_config(name, [("l%d" % i, op, pat) for i, (op, pat, _) in enumerate(batch)])
        args = ["l%d=%s" % (i, am_quote(v)) for i, (_, _, v) in enumerate(batch) if v is not None]
        p = subprocess.run([self.amtool, "config", "routes", "test", "--config.file=" + path] + args,
                           capture_output=True, timeout=60)
        out = p.stdout.decode("utf-8").strip()
        self.assertEqual(p.returncode, 0, out + p.stderr.decode("utf-8", "replace"))
        got = set()
        for r in out.split(","):
            if r != "default":
                self.assertTrue(r.startswith("r"), out)
                got.add(int(r[1:]))
        return got

    # ---------------------------------------------------------- comparisons

    def compare_validity(self, tag, patterns):
        """-> (patterns Alertmanager accepts, differences not in DIVERGENT)."""
        rd = self.recoveryd([("l=~" + go_quote(p), {}) for p in patterns])
        names = ["%s-check-%d.yml" % (tag, i) for i in range(len(patterns))]
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
            am = list(ex.map(self.am_accepts, names, patterns))
        accepted, diffs = [], []
        for pat, (am_ok, am_out), r in zip(patterns, am, rd):
            rd_ok = not isinstance(r, str)
            if am_ok:
                accepted.append(pat)
            if pat in DIVERGENT:
                want_am, want_rd, _ = DIVERGENT[pat]
                if (am_ok, rd_ok) != (want_am, want_rd):
                    diffs.append("%r: documented divergence no longer holds: Alertmanager %s, "
                                 "recoveryd %s" % (pat, am_ok, rd_ok))
            elif rd_ok != am_ok:
                diffs.append("%r: Alertmanager %s, recoveryd %s"
                             % (pat, "accepts" if am_ok else "refuses (%s)" % am_out.strip(),
                                "accepts" if rd_ok else "refuses (%s)" % r))
        return accepted, diffs

    def compare_decisions(self, tag, triples):
        """triples: [(op, pattern, value or None)] -> (matching, differences)."""
        rd = self.recoveryd([("l" + op + go_quote(pat), {} if v is None else {"l": v})
                             for op, pat, v in triples])
        batches = [triples[i:i + BATCH] for i in range(0, len(triples), BATCH)]
        names = ["%s-batch-%d.yml" % (tag, b) for b in range(len(batches))]
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
            am = list(ex.map(self.am_matches, names, batches))
        diffs = []
        for b, (batch, got) in enumerate(zip(batches, am)):
            for i, (op, pat, v) in enumerate(batch):
                want = i in got
                r = rd[b * BATCH + i]
                if r != want:
                    diffs.append("l%s%s against %s: Alertmanager %s, recoveryd %s"
                                 % (op, go_quote(pat), "missing" if v is None else go_quote(v),
                                    want, r))
        return sum(len(g) for g in am), diffs

    def check_balance(self, n, matched):
        self.assertGreaterEqual(n, MIN_PAIRS)
        self.assertGreater(matched, n // 10, "too few matches to be a fair sample")
        self.assertLess(matched, n * 9 // 10, "too few non-matches")

    # ---------------------------------------------------------------- tests

    def test_same_patterns_valid(self):
        patterns = VALID + INVALID + list(DIVERGENT)
        self.assertEqual(len(set(patterns)), len(patterns), "a pattern is listed twice")
        accepted, diffs = self.compare_validity("listed", patterns)
        for pat in VALID + INVALID:
            if (pat in accepted) != (pat in VALID):
                diffs.append("%r: listed as %s but Alertmanager %s it"
                             % (pat, "valid" if pat in VALID else "invalid",
                                "accepts" if pat in accepted else "refuses"))
        print("compared validity of %d patterns (%d documented divergences)"
              % (len(patterns), len(DIVERGENT)))
        if diffs:
            self.fail("%d differences:\n%s" % (len(diffs), "\n".join(diffs)))

    def test_same_decisions(self):
        started = time.monotonic()
        rng = random.Random(SEED)
        triples = []
        for pat in VALID:
            values = rng.sample(VALUES, 30) + [random_value(rng) for _ in range(4)]
            values.append(None)  # label missing: matches as ""
            triples += [(random_op(rng), pat, v) for v in values if expressible(v)]
        rng.shuffle(triples)
        matched, diffs = self.compare_decisions("listed", triples)
        print("compared %d matcher/value pairs (%d listed patterns, %d matching), %.1f s"
              % (len(triples), len(VALID), matched, time.monotonic() - started))
        self.check_balance(len(triples), matched)
        if diffs:
            self.fail("%d differences (first 50):\n%s" % (len(diffs), "\n".join(diffs[:50])))

    def test_random_patterns(self):
        """Generated patterns (valid or not) and values built from the same
        atoms, so that a fair share matches."""
        started = time.monotonic()
        rng = random.Random(SEED + 1)
        patterns = list(dict.fromkeys(random_pattern(rng) for _ in range(RANDOM_PATTERNS)))
        accepted, diffs = self.compare_validity("random", patterns)
        if diffs:
            self.fail("%d differences in validity:\n%s" % (len(diffs), "\n".join(diffs)))
        triples = []
        for pat in accepted:
            values = [random_value(rng, RANDOM_VALUE_ATOMS, 6) for _ in range(12)]
            values += rng.sample(VALUES, 4) + [None]
            triples += [(random_op(rng), pat, v) for v in values if expressible(v)]
        matched, diffs = self.compare_decisions("random", triples)
        print("compared validity of %d generated patterns (%d valid) and %d pattern/value pairs "
              "(%d matching), %.1f s" % (len(patterns), len(accepted), len(triples), matched,
                                         time.monotonic() - started))
        self.check_balance(len(triples), matched)
        if diffs:
            self.fail("%d differences (first 50):\n%s" % (len(diffs), "\n".join(diffs[:50])))

if __name__ == "__main__":
    unittest.main()
