#!/usr/bin/env python3
"""What the kernel charges for a ledger commit's writes and sync, on the file system of DIR.

Usage: bench/wal-writes.py [--dir DIR] [--commits N] [--frames F ...]

A commit in WAL mode writes each changed page as a frame, with two `pwrite`s (its 24-byte header,
then the page), and, with `synchronous=FULL`, syncs the WAL. This writes frames of 4 KiB pages
the same way into a 4 MiB file in DIR (default: the current directory, where a store would live),
F frames a commit (default 16, about what a commit of a hundred charges writes), then
`fdatasync`s, N times (default 1,500), and prints the wall and system time a commit. First it
prints the system time of one `pwrite` of a few sizes, and of a bare system call for scale. The
system time is the process's own (`getrusage`): what the server's core would pay. Pin it to a CPU
(`taskset -c 0`) to compare with the harness.
"""

import argparse
import os
import resource
import sys
import tempfile
import time

PAGE = 4096
HEADER = 24
FILE_PAGES = 1024


def timed(fn, n):
    """Runs fn(i) for i in 0..n; returns (wall µs, system µs) per call."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall / n * 1e6, (after.ru_stime - before.ru_stime) / n * 1e6


class Commits:
    """One call writes `frames` frames after the last one written (wrapping within the file),
    each as SQLite writes a WAL frame, then syncs."""

    def __init__(self, fd, data, frames):
        self.fd, self.data, self.frames, self.offset = fd, data, frames, 0

    def __call__(self, _):
        frame = HEADER + PAGE
        for _ in range(self.frames):
            os.pwrite(self.fd, self.data[:HEADER], self.offset)
            os.pwrite(self.fd, self.data[:PAGE], self.offset + HEADER)
            self.offset = (self.offset + frame) % (FILE_PAGES * PAGE - frame)
        os.fdatasync(self.fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", default=".", help="where the scratch file goes (default: .)"
    )
    parser.add_argument("--commits", type=int, default=1500)
    parser.add_argument("--frames", type=int, nargs="*", default=[16])
    args = parser.parse_args()
    if args.commits < 1 or any(f < 0 for f in args.frames):
        sys.exit("--commits must be 1 or more and --frames 0 or more")
    if not os.path.isdir(args.dir):
        sys.exit(f"no such directory: {args.dir}")
    data = os.urandom(16 * PAGE)
    frame = HEADER + PAGE
    span = FILE_PAGES * PAGE
    with tempfile.NamedTemporaryFile(dir=args.dir, prefix="wal-writes-") as scratch:
        fd = scratch.fileno()
        os.pwrite(fd, bytes(span), 0)
        os.fsync(fd)

        print("one call, system time:")
        calls = [
            ("getppid (a bare system call)", lambda i: os.getppid()),
            (
                "pwrite of 24 bytes",
                lambda i: os.pwrite(fd, data[:HEADER], i * frame % span),
            ),
            ("pwrite of 4 KiB", lambda i: os.pwrite(fd, data[:PAGE], i * PAGE % span)),
            (
                "pwrite of 16 KiB",
                lambda i: os.pwrite(fd, data[: 4 * PAGE], i * 4 * PAGE % span),
            ),
            ("pwrite of 64 KiB", lambda i: os.pwrite(fd, data, i * 16 * PAGE % span)),
        ]
        for name, call in calls:
            wall, system = timed(call, 20_000)
            print(f"  {name:30s} wall {wall:7.2f} µs  system {system:7.2f} µs")

        print(f"a commit of F frames then fdatasync ({args.commits} commits):")
        for frames in args.frames:
            wall, system = timed(Commits(fd, data, frames), args.commits)
            print(
                f"  F = {frames:3d}: wall {wall:8.1f} µs  system {system:7.1f} µs a commit"
            )


if __name__ == "__main__":
    main()
