#!/usr/bin/env python3
"""Refreshes README.md's "Where it stands" rows from the table PERF.md
opens with (after a standing run is pasted there): each README row keeps
its label and takes PERF.md's ratio and anchor, and the section names
PERF.md's commit. A row PERF.md does not have is an error. The test
`the_readme_figures_are_perf_md_s_standing_run` holds the two together.

    python3 tools/perf/readme-rows.py
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[2]
perf = (root / "PERF.md").read_text()
readme_path = root / "README.md"
readme = readme_path.read_text()


def rows(text, heading):
    """(start, end, rows) of the first table under heading."""
    at = text.index(heading)
    lines = text[at:].split("\n")
    i = next(k for k, l in enumerate(lines) if l.startswith("|"))
    j = i
    while j < len(lines) and lines[j].startswith("|"):
        j += 1
    start = at + sum(len(l) + 1 for l in lines[:i])
    end = at + sum(len(l) + 1 for l in lines[:j])
    cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines[i + 2 : j]]
    return start, end, lines[i : i + 2], cells


_, _, _, standing = rows(perf, "## Where udpring stands")
by_what = {r[0]: (r[4], r[2]) for r in standing}
commit = re.search(r"commit (\w+),", perf).group(1)

start, end, head, mine = rows(readme, "## Where it stands")
out = list(head)
for r in mine:
    if r[0] not in by_what:
        sys.exit(f"README row {r[0]!r} is not a row of PERF.md's table")
    ratio, anchor = by_what[r[0]]
    out.append(f"| {r[0]} | {ratio} | {anchor} |")
head_at = readme.index("## Where it stands")
intro = re.sub(r"on commit \w+", f"on commit {commit}", readme[head_at:start], count=1)
text = readme[:head_at] + intro + "\n".join(out) + "\n" + readme[end:]
readme_path.write_text(text)
print(f"README.md: {len(mine)} rows from PERF.md's run on {commit}")
