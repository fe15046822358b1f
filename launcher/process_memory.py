"""Resident memory of a process and everything it started, read from /proc (Linux).

The MLflow child is a tree: `mlflow server` starts uvicorn, whose workers (and MLflow's job runner
and its consumers) are further children. A process counts when its chain of parents reaches the
root, or when it is in the root's process group (a worker whose parent has exited is re-parented,
but keeps the group). Each process's resident set is counted whole, as `ps` shows it: pages two
processes share count twice, so the sum can be a little above what the tree really takes.
"""

from __future__ import annotations

import os
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
PROC = Path("/proc")


def read_stat(pid_dir: Path) -> tuple[int, int, int] | None:
    """(parent pid, process group, resident pages) from /proc/<pid>/stat; None when it is gone."""
    try:
        text = (pid_dir / "stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[2]), int(fields[21])


def tree_pids(root: int, proc: Path = PROC) -> dict[int, int]:
    """The pids of `root`, its descendants and its process group, each with its resident bytes."""
    parents: dict[int, int] = {}
    resident: dict[int, int] = {}
    members: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(entry)
        if stat is None:
            continue
        pid = int(entry.name)
        parent, group, pages = stat
        parents[pid] = parent
        resident[pid] = pages * PAGE_BYTES
        if group == root:
            members.add(pid)
    for pid in parents:
        seen = pid
        for _ in range(64):  # deeper than any tree of ours; guards against a cycle read mid-change
            if seen == root:
                members.add(pid)
                break
            seen = parents.get(seen, 0)
            if seen <= 1:
                break
    return {pid: resident[pid] for pid in members if pid in resident}


def tree_resident_bytes(root: int) -> int:
    """Resident bytes of `root` and everything it started (0 once it is gone)."""
    return sum(tree_pids(root).values())
