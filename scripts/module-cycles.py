#!/usr/bin/env python3
"""Prints the import circles between Gatehouse's top-level modules.

Reads every `crate::MODULE` path in src/ (test modules and comments left
out), draws an
arrow from each file's top-level module to each module it names, and prints
every strongly connected group of modules (a group whose members all reach
each other) with the files behind each arrow. Exit status 1 when there is
one. Usage: scripts/module-cycles.py [--quiet]
"""
import collections
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def top_modules():
    names = set()
    for entry in os.listdir(SRC):
        if entry.endswith(".rs"):
            names.add(entry[:-3])
        elif os.path.isdir(os.path.join(SRC, entry)):
            names.add(entry)
    return names - {"lib", "main"}


def arrows(modules):
    edges = collections.defaultdict(set)
    files = collections.defaultdict(set)
    for root, _, names in os.walk(SRC):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, SRC)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            text = open(path, encoding="utf-8").read()
            cut = text.find("#[cfg(test)]")
            if cut >= 0:
                text = text[:cut]
            # Comments name modules without depending on them.
            text = re.sub(r"//[^\n]*", "", text)
            for m in re.finditer(r"\bcrate::(\w+)", text):
                target = m.group(1)
                if target != top and target in modules:
                    edges[top].add(target)
                    files[(top, target)].add("src/" + rel)
    return edges, files


def groups(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return [g for g in out if len(g) > 1]


def main():
    modules = top_modules()
    edges, files = arrows(modules)
    circles = groups(modules, edges)
    quiet = "--quiet" in sys.argv
    for group in circles:
        print(f"{len(group)} modules reach each other: {', '.join(group)}")
        if not quiet:
            for a in group:
                for b in sorted(edges[a]):
                    if b in group:
                        print(f"  {a} -> {b}: {', '.join(sorted(files[(a, b)]))}")
    if not circles:
        print(f"no circle between the {len(modules)} top-level modules")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
