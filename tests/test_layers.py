#!/usr/bin/env python3
"""tests/test_layers.py — a component's files form layers: no dependency cycle among them
(DESIGN.md §2, issue 11 item 5); run on host/ and on topology/.

Reads the compiled objects of one folder (nm): a file depends on another when it refers to a symbol the
other defines. Peels the graph from the bottom: a file that depends on no remaining file is a
layer's member and is removed, again and again. Files that can never be removed sit on a cycle or
lead into one; the test then walks one such cycle and prints each step with the symbols that make
it, so the failure says which reference to move, and exits 1. On success it prints the layers,
bottom first.

Calls through function pointers (hooks such as the ledger's nsp__ledger_crossed) are invisible to
nm, which is what they are for: a lower layer reaches an upper one only through what the upper one
installed. Inline functions in headers count as part of the file that inlines them.

usage: test_layers.py OBJECT_DIR   (a folder of .c.o files in the build tree, e.g. host/'s)
"""
import os
import subprocess
import sys

# The C library's allocation interface: a file calling calloc() depends on the C library's
# contract, which numaspan's api.c happens to implement when it is the process's allocator.
STANDARD = {"malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
            "valloc", "pvalloc", "malloc_usable_size", "reallocarray", "malloc_trim", "mallinfo2"}


def symbols(path):
    """(defined, referenced) global symbol names of one object file."""
    out = subprocess.run(["nm", "-P", path], capture_output=True, text=True, check=True).stdout
    defined, referenced = set(), set()
    for line in out.splitlines():
        f = line.split()
        if len(f) < 2:
            continue
        if f[1] == "U":
            referenced.add(f[0])
        elif f[1].isupper():  # lower case: local to the file
            defined.add(f[0])
    return defined, referenced


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: test_layers.py OBJECT_DIR (host/'s objects, e.g. "
                 "build/CMakeFiles/nsp_objects.dir/host); got %r" % sys.argv[1:])
    odir = sys.argv[1]
    folder = os.path.basename(os.path.normpath(odir)) + "/"
    files = sorted(f[:-2] for f in os.listdir(odir) if f.endswith(".c.o"))
    if len(files) < 5:
        sys.exit("FAIL: only %d objects in %s: build first" % (len(files), odir))
    owner, refs = {}, {}
    for f in files:
        d, r = symbols(os.path.join(odir, f + ".o"))
        for name in d:
            owner[name] = f
        refs[f] = r
    deps = {f: {} for f in files}  # f -> {g: [symbols]}
    for f in files:
        for name in refs[f] - STANDARD:
            g = owner.get(name)
            if g and g != f:
                deps[f].setdefault(g, []).append(name)

    remaining, layers = set(files), []
    while True:
        bottom = sorted(f for f in remaining if not (set(deps[f]) & remaining))
        if not bottom:
            break
        layers.append(bottom)
        remaining -= set(bottom)
    if not remaining:
        for i, layer in enumerate(layers):
            print("layer %d: %s" % (i, " ".join(layer)))
        print("ok: %d files of %s, no dependency cycle" % (len(files), folder))
        return 0

    # every remaining file depends on another remaining one: walking those edges must repeat
    walk, seen, f = [], {}, min(remaining)
    while f not in seen:
        seen[f] = len(walk)
        walk.append(f)
        f = min(g for g in deps[f] if g in remaining)
    cycle = walk[seen[f]:] + [f]
    print("FAIL: a dependency cycle among %s's files (DESIGN.md §2 wants layers):" % folder)
    for a, b in zip(cycle, cycle[1:]):
        names = sorted(deps[a][b])
        print("  %s -> %s: %s%s" % (a, b, ", ".join(names[:6]), " ..." if len(names) > 6 else ""))
    print("files on or above a cycle: %s" % " ".join(sorted(remaining)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
