#!/usr/bin/env python3
"""Regenerate the copies of the playbooks and the Lua helper library in the
kustomize base (kustomize loads only files inside k8s/base/):

    playbooks/*.lua     -> k8s/base/playbooks/
    lua/recovery/*.lua  -> k8s/base/lua/recovery/

and the file lists of their ConfigMap generators in k8s/base/kustomization.yaml.
A file in a copy directory that has no source is removed.

    python3 scripts/gen-k8s.py            # write the copies; prints what changed
    python3 scripts/gen-k8s.py --check    # write nothing; exit 1 naming each stale file

--root DIR works on another checkout (default: the one holding this script).
Exit status: 0 up to date (or regenerated), 1 stale (--check), 2 error."""

import argparse
import os
import shutil
import sys

# (source directory, copy directory), relative to the repository root
PAIRS = [("playbooks", "k8s/base/playbooks"), ("lua/recovery", "k8s/base/lua/recovery")]
KUSTOMIZATION = "k8s/base/kustomization.yaml"
BASE = "k8s/base"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def sources(root, src):
    return sorted(n for n in os.listdir(os.path.join(root, src))
                  if n.endswith(".lua") and os.path.isfile(os.path.join(root, src, n)))


def plan_copies(root):
    """[(action, copy path, source path or None)]: what makes the copies equal."""
    todo = []
    for src, dst in PAIRS:
        names = sources(root, src)
        dst_dir = os.path.join(root, dst)
        have = sorted(os.listdir(dst_dir)) if os.path.isdir(dst_dir) else []
        for n in names:
            s, d = os.path.join(src, n), os.path.join(dst, n)
            if n not in have:
                todo.append(("missing", d, s))
            elif read(os.path.join(root, s)) != read(os.path.join(root, d)):
                todo.append(("differs", d, s))
        for n in have:
            if n not in names:
                todo.append(("stale", os.path.join(dst, n), None))
    return todo


def kustomization_text(root):
    """(current text, wanted text) of the kustomization: each generator's run of
    `- <copy dir>/<file>` lines lists exactly the source files."""
    path = os.path.join(root, KUSTOMIZATION)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    for src, dst in PAIRS:
        prefix = os.path.relpath(dst, BASE) + "/"     # "playbooks/", "lua/recovery/"
        start = next((i for i, l in enumerate(lines) if l.lstrip().startswith("- " + prefix)), None)
        if start is None:
            print("gen-k8s: %s lists no %s file: cannot tell where the list goes" % (KUSTOMIZATION, prefix),
                  file=sys.stderr)
            sys.exit(2)
        indent = lines[start][:len(lines[start]) - len(lines[start].lstrip())]
        end = start
        while end < len(lines) and lines[end].startswith(indent + "- " + prefix):
            end += 1
        lines[start:end] = [indent + "- " + prefix + n for n in sources(root, src)]
    return text, "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a copy is stale")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="repository root (default: the checkout of this script)")
    args = ap.parse_args(argv)
    root = args.root
    todo = plan_copies(root)
    old, new = kustomization_text(root)

    if args.check:
        for action, d, s in todo:
            why = {"missing": "missing (source %s)" % s, "differs": "differs from %s" % s,
                   "stale": "has no source: stale"}[action]
            print("%s: %s" % (d, why), file=sys.stderr)
        if old != new:
            print("%s: the ConfigMap file lists differ from the sources" % KUSTOMIZATION, file=sys.stderr)
        if todo or old != new:
            print("the copies in %s are stale: run python3 scripts/gen-k8s.py and commit the result" % BASE,
                  file=sys.stderr)
            return 1
        return 0

    for action, d, s in todo:
        dpath = os.path.join(root, d)
        if action == "stale":
            if os.path.isdir(dpath):
                shutil.rmtree(dpath)
            else:
                os.remove(dpath)
            print("removed %s" % d)
        else:
            os.makedirs(os.path.dirname(dpath), exist_ok=True)
            with open(dpath, "wb") as f:
                f.write(read(os.path.join(root, s)))
            print("%s %s" % ("wrote" if action == "missing" else "updated", d))
    if old != new:
        with open(os.path.join(root, KUSTOMIZATION), "w", encoding="utf-8") as f:
            f.write(new)
        print("updated %s" % KUSTOMIZATION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
