#!/usr/bin/env python3
"""tests/test_fast_path.py — nsp_malloc and nsp_free keep their fast paths inline (host/alloc.h).

The bins' fast path (a restartable pop or push, host/cache.h) must run inside the entry point
itself: no call and no jump to another function before it returns, and the rseq area (%fs) read
on the way. Out-of-line slow paths are tail jumps placed after the fast path's ret. Without this
check, a change of inlining (gcc keeping one out-of-line copy of `alloc` once malloc.c was split
into files, so that nsp_malloc became a jump to it) goes unseen: the suite stays green and every
malloc pays a jump.

Reads the library's code with objdump, from each function's address to its end (nm -D -S: the
standard names alias these, so objdump's own label may be malloc or __libc_malloc). Walks the
instructions in address order up to the first ret, and checks that nsp_free's tail jumps reach
the slow paths named in SLOW_TARGETS, that no fast path builds a stack frame, that none reads
what FORBIDDEN names, that malloc tests no more than BRANCHES_BEFORE_SEQUENCE allows before its
sequence, and that no fast path grows past INSTRUCTIONS_MAX (in builds by the compiler it was
measured with, BUDGET_COMPILER; others get a note). And, in the whole library, that no code calls
what LIBGCC_CALLS names: a bitmap count written as __builtin_popcountll is such a call in this
baseline x86-64 build (nsp__popcount64, host/types.h, is the inline one). On x86-64 builds with
the bins only: the caller (tests/CMakeLists.txt) leaves it out of sanitizer builds, whose
instrumentation calls.

usage: test_fast_path.py LIBNUMASPAN_SO
"""
import re
import subprocess
import sys

FUNCTIONS = ["nsp_malloc", "nsp_free"]


def symbols(lib):
    """{name: (start, size)} of the library's defined dynamic symbols."""
    out = subprocess.run(["nm", "-D", "-S", "--defined-only", lib], capture_output=True, text=True,
                         check=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4:
            syms[f[3]] = (int(f[0], 16), int(f[1], 16))
    return syms


def instructions(lib, start, size):
    """[(address, text)] of the code in [start, start + size)."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "--start-address=%#x" % start,
                          "--stop-address=%#x" % (start + size), lib],
                         capture_output=True, text=True, check=True).stdout
    insns = []
    for line in out.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s+(.*)$", line)
        if m:
            insns.append((int(m.group(1), 16), m.group(2).strip()))
    return insns


def check(name, start, size, insns):
    """The problems of one function's fast path, [] when there are none."""
    hot = []
    for addr, text in insns:
        hot.append((addr, text))
        if re.match(r"^(rep )?ret", text):
            break
    else:
        return ["%s: no ret: the function is not a fast path of its own (%d instructions, the "
                "first: %s)" % (name, len(insns), insns[0][1] if insns else "none")]
    problems = []
    for addr, text in hot:
        op = text.split()[0]
        if op.startswith("call"):
            problems.append("%s+%#x: a call before the fast path returns: %s" %
                            (name, addr - start, text))
        elif op == "jmp":
            m = re.match(r"^jmp\s+([0-9a-f]+)\b", text)
            target = int(m.group(1), 16) if m else None
            if target is None or not start <= target < start + size:
                problems.append("%s+%#x: a jump out of the function before the fast path returns: %s"
                                % (name, addr - start, text))
    for addr, text in hot:
        # a frame (a saved register, room on the stack) on the way to the ret is paid by every
        # call: the fast path must not need one; the slow paths that do are tail jumps
        if re.match(r"^(push|sub\s+\$0x[0-9a-f]+,%rsp)", text):
            problems.append("%s+%#x: a stack frame on the fast path: %s" %
                            (name, addr - start, text))
        for sym, why in FORBIDDEN.get(name, []):
            if "<%s" % sym in text:
                problems.append("%s+%#x: the fast path reads %s (%s): %s" %
                                (name, addr - start, sym, why, text))
    # the tests before the restartable sequence starts, in address order: each is a branch every
    # call takes. The start is the store of the sequence's descriptor into the thread's rseq area
    # (rseq->rseq_cs, %fs:8 off the area's offset: NSP_RSEQ_ENTER, host/cache.h), not the load
    # of that offset: nsp__rseq_off is a plain load the compiler schedules freely (gcc hoists it
    # above the class's look-up), so a branch added between it and the sequence went uncounted
    limit = BRANCHES_BEFORE_SEQUENCE.get(name)
    if limit is not None:
        tests = []
        for addr, text in hot:
            if re.search(r",%fs:0x8\(%[a-z0-9]+\)$", text):
                break
            if re.match(r"^j(?!mp)[a-z]+\s", text):
                tests.append(text)
        else:
            problems.append("%s: no store of a sequence's descriptor (%%fs:0x8) before its ret: "
                            "its restartable sequence is not inlined" % name)
        if len(tests) > limit:
            problems.append("%s: %d branches before its sequence, at most %d: %s" %
                            (name, len(tests), limit, "; ".join(tests)))
    most = INSTRUCTIONS_MAX.get(name)
    if most is not None and BUDGET_COMPILER_OTHER:
        print("note: %s: instruction budget (%d) not applied: the library was built by %s, the "
              "budget is %s's (%d instructions here)" %
              (name, most, BUDGET_COMPILER_OTHER, BUDGET_COMPILER, len(hot)))
    elif most is not None and len(hot) > most:
        problems.append("%s: %d instructions up to its ret, at most %d (host/alloc.h: what each "
                        "one costs every call)" % (name, len(hot), most))
    if not any("%fs:" in text for _, text in hot):
        problems.append("%s: the fast path reads no %%fs (the rseq area): its restartable "
                        "sequence is not inlined" % name)
    if not problems:
        print("ok: %s: fast path of %d instructions up to its ret, no call, no jump out" %
              (name, len(hot)))
    return problems


# What each fast path must not read (issue 11, Larson at 2 threads: the per-operation cost;
# host/alloc.h, sizeclass.h): malloc's bin pop needs no nsp__ready (a thread with a bin cache saw
# the allocator initialised); free's push takes the class's divmul and size from the packed
# nsp__class_push, one load, not from the 20-byte records of nsp__classes.
FORBIDDEN = {
    "nsp_malloc": [("nsp__ready", "a thread with a bin cache needs no initialisation check")],
    "nsp_free": [("nsp__classes", "the push's constants are nsp__class_push's")],
}

# How many tests a fast path makes before its sequence: malloc's are "this thread has a bin
# cache" and "the size is small"; the class is then one load from nsp__class_of, with no branch on
# the size's range (sizeclass.h; issue 11, the per-operation cost).
BRANCHES_BEFORE_SEQUENCE = {"nsp_malloc": 2}

# How long each fast path may be, up to its ret (gcc 12 -O2, the CI build): every instruction is
# paid by every call, and per-thread loops of malloc and free are bound by how many there are
# (issue 11, loops and pairs against mimalloc's 15 and 25). Measured when the push's slot test
# became one multiply, the pop's results jumps of its own and the rseq offset and the tag's key
# hidden loads (host/cache.h): malloc 48 -> 40, free 75 -> 63. A change that lengthens them must
# say why here.
INSTRUCTIONS_MAX = {"nsp_malloc": 40, "nsp_free": 63}
# The compiler those lengths are of. Another (clang 14 here: malloc 50, free 66; gcc 13 on the
# GPU machine) lays the same code out differently, and failing the suite for it says nothing
# about a change: its build gets the other checks and a note with its lengths instead.
BUDGET_COMPILER = "gcc 12"
BUDGET_COMPILER_OTHER = None  # set by main(): what else built the library, if anything


def other_compiler(lib):
    """What built lib's code, from its .comment, when that is not only BUDGET_COMPILER: None
    when it is (or when there is no .comment to read: the budget then applies)."""
    try:
        out = subprocess.run(["readelf", "-p", ".comment", lib], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names = [m.group(1).strip() for m in re.finditer(r"^\s*\[\s*[0-9a-f]+\]\s+(.*)$", out,
                                                     re.M)]
    for n in names:
        m = re.match(r"^GCC: .*\s(\d+)\.\d+\.\d+\S*$", n)
        if not m or m.group(1) != BUDGET_COMPILER.split()[1]:
            return "'%s'" % n
    return None

# Where nsp_free's slow paths go: a small object its bin refused (mostly a remote free) must go to
# nsp__free_classed, which takes the span from p's page map entry, not through
# nsp__free_any's look-up (host/free.c; producer/consumer's every free, README).
SLOW_TARGETS = {"nsp_free": ["nsp__free_classed", "nsp__free_any"]}


def slow_target_problems(name, insns):
    """The slow paths named in SLOW_TARGETS that name's tail jumps do not reach."""
    reached = set()
    for _, text in insns:
        m = re.match(r"^jmp\s+[0-9a-f]+\s+<([^>+]+)>", text)
        if m:
            reached.add(m.group(1))
    return ["%s: no tail jump to %s (its slow paths reach %s)" %
            (name, want, ", ".join(sorted(reached)) or "nothing")
            for want in SLOW_TARGETS.get(name, []) if want not in reached]


# libgcc helpers the library must not call: the build targets x86-64's baseline (no popcnt), so
# __builtin_popcountll compiles to a call of __popcountdi2, a table loop. Found at the sweep (once
# per swept bitmap word), at each carve's cover (ledger.h) and, before that, at every magazine
# flush: 0.25-1.2% of all samples of producer/consumer (perf).
LIBGCC_CALLS = ["__popcountdi2"]


def libgcc_call_problems(lib):
    """The calls of LIBGCC_CALLS anywhere in lib's code."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", lib], capture_output=True,
                         text=True, check=True).stdout
    problems, fn = [], "?"
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            fn = m.group(1)
            continue
        for sym in LIBGCC_CALLS:
            if re.search(r"\b(call|jmp)\s+[0-9a-f]+\s+<%s" % re.escape(sym), line):
                problems.append("%s calls libgcc's %s (use nsp__popcount64, host/types.h): %s"
                                % (fn, sym, line.strip()))
    if not problems:
        print("ok: no call of %s in the library" % ", ".join(LIBGCC_CALLS))
    return problems


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: test_fast_path.py LIBNUMASPAN_SO")
    lib = sys.argv[1]
    global BUDGET_COMPILER_OTHER
    BUDGET_COMPILER_OTHER = other_compiler(lib)
    syms = symbols(lib)
    problems = []
    for name in FUNCTIONS:
        if name not in syms:
            problems.append("%s: not defined in %s" % (name, lib))
            continue
        start, size = syms[name]
        insns = instructions(lib, start, size)
        problems += check(name, start, size, insns)
        problems += slow_target_problems(name, insns)
    problems += libgcc_call_problems(lib)
    for p in problems:
        print("FAIL: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
