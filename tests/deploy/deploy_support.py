"""Shared helpers of the deployment-kit checks (tests/deploy/test_*.py).

Environment (set by ctest, see tests/CMakeLists.txt):
  RECOVERYD_BIN         the built binary (tests that need it are skipped without it)
  RECOVERYD_SOURCE_DIR  repository root (default: two levels above this file)

Tools: promtool (Debian package prometheus), amtool (prometheus-alertmanager),
yamllint, and PyYAML (python3-yaml), all installed by scripts/deps.sh. A
missing tool fails the test with the package to install: CI must never
silently skip these checks.
"""

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("RECOVERYD_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
K8S = os.path.join(ROOT, "k8s")
MONITORING = os.path.join(K8S, "monitoring")

PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager", "yamllint": "yamllint"}


def path(*parts):
    return os.path.join(ROOT, *parts)


def read(*parts):
    with open(path(*parts), encoding="utf-8") as f:
        return f.read()


def yaml_module():
    try:
        import yaml  # noqa: F401  (python3-yaml)
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise AssertionError("PyYAML is missing: install python3-yaml (bash scripts/deps.sh)") from e
    return sys.modules["yaml"]


def load_yaml(*parts):
    """The single YAML document of a file."""
    return yaml_module().safe_load(read(*parts))


def load_yaml_all(*parts):
    """Every non-empty YAML document of a file."""
    return [d for d in yaml_module().safe_load_all(read(*parts)) if d is not None]


def tool(name):
    p = shutil.which(name)
    if not p:
        raise AssertionError("%s not found: install the Debian package %s (bash scripts/deps.sh)"
                             % (name, PACKAGES.get(name, name)))
    return p


def run(argv, cwd=None, timeout=120):
    """Run a command; returns CompletedProcess with text output."""
    return subprocess.run(argv, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


def binary():
    b = os.environ.get("RECOVERYD_BIN")
    return b if b and os.access(b, os.X_OK) else None


def config_flags():
    """The long flags of src/config.c's option table: {name: type}."""
    src = read("src", "config.c")
    return {m.group(1): m.group(2) for m in re.finditer(r'\{"([a-z][a-z0-9-]*)", (O_[A-Z]+),', src)}


_METRIC = re.compile(r"\brecoveryd_[a-zA-Z0-9_]+")


def metric_names(text):
    """Every recoveryd_* identifier in a PromQL expression (or any text)."""
    return set(_METRIC.findall(text))


def playbook_alertnames(lua_source):
    """Alert names a playbook's `match` selects: alertname="X" and
    alertname=~"A|B" (a plain alternation of names)."""
    m = re.search(r"^\s*match\s*=\s*\{(.*?)\}", lua_source, re.M | re.S)
    if not m:
        return set()
    names = set()
    for mm in re.finditer(r'alertname\s*(=~|=)\s*\\?"([^"\\]+)\\?"', m.group(1)):
        op, val = mm.group(1), mm.group(2)
        if op == "=":
            names.add(val)
        else:
            for alt in val.split("|"):
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", alt):
                    names.add(alt)
    return names
