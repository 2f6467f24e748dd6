#!/usr/bin/env python3
"""SQLite's instructions per ledger row, for the ledger's table as it is and for other layouts.

Usage: bench/ledger-schemas.py [--rows N] [--accounts K] [--dir DIR] [LAYOUT ...]

Each layout's table is filled with N rows (default 1,000,000) of K accounts (default 1, as in the
harness, whose charges all come from one key), then 60 commits of 64 new rows each are written by
the sqlite3 shell under callgrind, in multi-row INSERTs like the ledger writer's, and the
instructions SQLite's virtual machine runs (`sqlite3VdbeExec` and everything it calls, the commits
included; parsing the statements excluded) are divided by the rows written. Needs `sqlite3` and
`valgrind` (Debian's packages). Instruction counts repeat exactly for the same inputs, so small
differences between layouts are real. Prints each layout's count and its file's size.
"""

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import uuid

COLUMNS = """account_id INTEGER NOT NULL, key_id INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    endpoint TEXT NOT NULL, status INTEGER NOT NULL, cost INTEGER NOT NULL CHECK (cost >= 0),
    paid INTEGER NOT NULL CHECK (paid >= 0), free INTEGER NOT NULL CHECK (free >= 0),
    latency_us INTEGER NOT NULL"""

BY_ACCOUNT = "CREATE INDEX requests_by_account ON requests (account_id);"


def with_seq(id_type="TEXT", unique=True, by_account=True):
    """A rowid table numbered by `seq`, as the ledger is: (DDL, binary ids?, conflict target)."""
    ddl = f"""CREATE TABLE requests (seq INTEGER PRIMARY KEY,
        request_id {id_type} NOT NULL{" UNIQUE" if unique else ""}, {COLUMNS});"""
    if by_account:
        ddl += BY_ACCOUNT
    return ddl, id_type == "BLOB", "request_id" if unique else None


def keyed(primary_key, id_type="TEXT", by_account=False):
    """A table stored in the order of its primary key (`WITHOUT ROWID`), without `seq`."""
    ddl = f"""CREATE TABLE requests (request_id {id_type} NOT NULL, {COLUMNS},
        PRIMARY KEY ({primary_key})) WITHOUT ROWID;"""
    if by_account:
        ddl += BY_ACCOUNT
    return ddl, id_type == "BLOB", primary_key


LAYOUTS = {
    # The ledger as xgate writes it (ledger migration 3).
    "current": with_seq(),
    "current, id as 16 bytes": with_seq(id_type="BLOB"),
    "keyed by request id, no seq": keyed("request_id", by_account=True),
    "keyed by (account, request id), no seq": keyed("account_id, request_id"),
    "keyed by (account, request id as 16 bytes), no seq": keyed(
        "account_id, request_id", id_type="BLOB"
    ),
    "current without the account index": with_seq(by_account=False),
    "current without the unique request id": with_seq(unique=False),
}
INSERT_COLUMNS = (
    "request_id, account_id, key_id, at_ms, endpoint, status, cost, paid, free, latency_us"
)
START_MS = 1_795_799_156_627
BATCHES, BATCH = 60, 64


def request_ids(seed, start_ms, n):
    """UUIDv7-like ids, time-ordered as the server makes them (a few per millisecond)."""
    rng = random.Random(seed)
    ms = start_ms
    for _ in range(n):
        ms += rng.choice((0, 0, 1))
        r = rng.getrandbits(74)
        yield uuid.UUID(
            int=(ms << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1))
        )


def account(i, accounts):
    return 1 + i % accounts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument(
        "--dir", default=None, help="where the files go (default: a temporary folder)"
    )
    parser.add_argument("layouts", nargs="*", help=f"a subset of: {'; '.join(map(repr, LAYOUTS))}")
    args = parser.parse_args()
    if args.rows < 0 or args.accounts < 1:
        sys.exit("--rows must be 0 or more and --accounts 1 or more")
    chosen = args.layouts or list(LAYOUTS)
    for name in chosen:
        if name not in LAYOUTS:
            sys.exit(f"unknown layout {name!r}; known: {'; '.join(map(repr, LAYOUTS))}")
    workdir = args.dir or tempfile.mkdtemp(prefix="ledger-schemas-")
    existing = list(request_ids(1, START_MS, args.rows))
    new = list(request_ids(2, START_MS + 10**7, BATCHES * BATCH))
    endpoint = "POST /user/medias/continuation"
    for index, name in enumerate(chosen):
        ddl, binary, conflict = LAYOUTS[name]
        path = os.path.join(workdir, f"layout-{index}.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(ddl)

        conn.executemany(
            f"INSERT INTO requests ({INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    u.bytes if binary else str(u),
                    account(i, args.accounts),
                    account(i, args.accounts),
                    START_MS + i,
                    endpoint,
                    200,
                    1,
                    1,
                    0,
                    9000 + i % 5000,
                )
                for i, u in enumerate(existing)
            ),
        )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        size = os.path.getsize(path)
        script = os.path.join(workdir, f"layout-{index}.sql")
        on_conflict = f" ON CONFLICT ({conflict}) DO NOTHING" if conflict else ""
        with open(script, "w") as f:
            # The harness's ledger is synced at every commit; syncs cost no instructions here.
            f.write("PRAGMA synchronous = OFF;\n")
            for b in range(BATCHES):
                rows = []
                for j in range(BATCH):
                    i = args.rows + b * BATCH + j
                    u = new[b * BATCH + j]
                    literal = f"X'{u.hex}'" if binary else f"'{u}'"
                    acct = account(i, args.accounts)
                    rows.append(
                        f"({literal}, {acct}, {acct}, {START_MS + i}, '{endpoint}', 200, 1, 1, 0, {9000 + j})"
                    )
                f.write(
                    f"BEGIN; INSERT INTO requests ({INSERT_COLUMNS}) VALUES {', '.join(rows)}{on_conflict}; COMMIT;\n"
                )
        out = os.path.join(workdir, f"layout-{index}.callgrind")
        with open(script) as stdin:
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--toggle-collect=sqlite3VdbeExec",
                    f"--callgrind-out-file={out}",
                    "sqlite3",
                    path,
                ],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
        report = subprocess.run(
            ["callgrind_annotate", out], capture_output=True, text=True, check=True
        ).stdout
        total = next(
            int(line.split()[0].replace(",", ""))
            for line in report.splitlines()
            if "PROGRAM TOTALS" in line
        )
        print(
            f"{name}: {total // (BATCHES * BATCH):,} instructions a row; "
            f"{size / 2**20:.1f} MiB for {args.rows:,} rows",
            flush=True,
        )


if __name__ == "__main__":
    main()
