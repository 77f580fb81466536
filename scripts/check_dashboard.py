"""Checks the Grafana dashboard deploy/grafana/allot.json.

Usage: check_dashboard.py DASHBOARD REFERENCE QUERIES_OUT

Fails (exit 1, one line per problem) when the dashboard is not a dashboard
Grafana imports (title, uid, schemaVersion, panels with ids, positions and
a data source), when a panel has no query, or when a query names an
`allot_*` metric that docs/reference.md does not document. Writes every
query, with the dashboard's variables filled in, to QUERIES_OUT as
Prometheus recording rules, so that `promtool check rules` parses each.
"""

import json
import re
import sys

dashboard_path, reference_path, out_path = sys.argv[1:4]
problems = []
with open(dashboard_path) as f:
    dashboard = json.load(f)
with open(reference_path) as f:
    reference = f.read()
documented = set(re.findall(r"allot_[a-z_]+", reference))

for field in ("title", "uid", "schemaVersion", "panels"):
    if field not in dashboard:
        problems.append(f"the dashboard has no {field!r}")
variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}

queries = []
ids = set()
for panel in dashboard.get("panels", []):
    title = panel.get("title", "?")
    if panel.get("id") in ids:
        problems.append(f"panel {title!r}: id {panel.get('id')} used twice")
    ids.add(panel.get("id"))
    pos = panel.get("gridPos", {})
    if not all(isinstance(pos.get(k), int) for k in ("h", "w", "x", "y")):
        problems.append(f"panel {title!r}: no grid position")
    elif pos["x"] + pos["w"] > 24:
        problems.append(f"panel {title!r}: wider than the 24-column grid")
    if panel.get("type") == "row":
        continue
    targets = panel.get("targets", [])
    if not targets:
        problems.append(f"panel {title!r}: no query")
    if "datasource" not in panel:
        problems.append(f"panel {title!r}: no data source")
    for target in targets:
        expr = target.get("expr", "")
        for name in re.findall(r"\$\{?(\w+)", expr):
            if name not in variables and not name.startswith("__"):
                problems.append(f"panel {title!r}: unknown variable ${name}")
        for metric in set(re.findall(r"allot_[a-z_]+", expr)):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            if metric not in documented and base not in documented:
                problems.append(f"panel {title!r}: {metric} is not in {reference_path}")
        filled = expr.replace("$__rate_interval", "5m").replace("$job", ".*")
        queries.append((title, filled))

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
with open(out_path, "w") as out:
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr}
        for n, (_, expr) in enumerate(queries)
    ]
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, out)
print(f"{dashboard_path}: {len(ids)} panels, {len(queries)} queries")
