#!/usr/bin/env python3
"""Which tables and indexes a store's commits write, read from a copy of its WAL.

Usage: bench/wal-frames.py WAL DB

WAL is a copy of a database's write-ahead log taken while a server writes to it (for the ledger,
`cp STORE-ledger-wal /tmp/ledger-wal` during a charged load: the log is folded into the database
and removed when the server stops), DB the database itself (`STORE-ledger`). Prints the frames
of the log's current generation, how many commits they make, and the frames a commit writes for
each table and index (named as SQLite names them: `sqlite_autoindex_requests_1` is the unique
index of `requests.request_id`; `sqlite_schema` is page 1, the file's header, rewritten whenever
the file grows). Reads both files only; needs Python's sqlite3 with the `dbstat` table
(Debian's has it).
"""

import argparse
import collections
import sqlite3
import struct
import sys

WAL_HEADER = struct.Struct(">8I")
FRAME_HEADER = struct.Struct(">6I")
WAL_MAGIC = (0x377F0682, 0x377F0683)


def frames(wal):
    """The (page number, database size after commit or 0) of each frame of the current
    generation: the frames whose salts match the header's."""
    if len(wal) < WAL_HEADER.size:
        sys.exit("not a WAL file: shorter than its header")
    magic, _, page_size, _, salt1, salt2, _, _ = WAL_HEADER.unpack_from(wal)
    if magic not in WAL_MAGIC:
        sys.exit("not a WAL file: wrong magic number")
    offset = WAL_HEADER.size
    while offset + FRAME_HEADER.size + page_size <= len(wal):
        page, db_size, s1, s2, _, _ = FRAME_HEADER.unpack_from(wal, offset)
        if (s1, s2) != (salt1, salt2):
            break
        yield page, db_size
        offset += FRAME_HEADER.size + page_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wal")
    parser.add_argument("db")
    args = parser.parse_args()
    try:
        with open(args.wal, "rb") as f:
            wal = f.read()
        db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
        owner = dict(db.execute("SELECT pageno, name FROM dbstat"))
    except (OSError, sqlite3.Error) as e:
        sys.exit(f"cannot read the files: {e}")
    commits, current = [], []
    for page, db_size in frames(wal):
        current.append(page)
        if db_size:
            commits.append(current)
            current = []
    if not commits:
        sys.exit("no whole commit in the log")
    written = sum(map(len, commits))
    print(
        f"{written} frames in {len(commits)} commits: {written / len(commits):.1f} a commit"
    )
    by_owner = collections.Counter(
        owner.get(page, "(a page new since the copy)") for c in commits for page in c
    )
    for name, count in by_owner.most_common():
        print(f"  {name:36s} {count / len(commits):5.2f} a commit")


if __name__ == "__main__":
    main()
