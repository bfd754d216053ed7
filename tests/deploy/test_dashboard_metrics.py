"""deploy_dashboard_metrics: every metric name in every Grafana dashboard query and alert
rule is a series that the live deltaserved exports (its /metrics after a push and a pull),
and every deltaserve_* family the daemon exports is shown on the dashboard."""
import deploy_lib as d

text = d.metrics_after_traffic("dash")
live = d.metric_names(text)
families = {f for f in d.metric_families(text) if f.startswith("deltaserve_")}
live_ds = {n for n in live if n.startswith("deltaserve_")}
d.log(f"live /metrics: {len(live_ds)} deltaserve_* series names")
used = set()
queries = d.dashboard_queries()
for title, ref, expr in queries:
    names = d.deltaserve_names_in(expr)
    d.check(names <= live_ds, f"dashboard panel '{title}' {ref}: {sorted(names - live_ds)} not exported")
    used |= names
    process = d.process_names_in(expr)
    d.check(process <= live, f"dashboard panel '{title}' {ref}: {sorted(process - live)} not exported")
for alert, expr in d.alert_queries():
    names = d.deltaserve_names_in(expr)
    d.check(names <= live_ds, f"alert {alert}: {sorted(names - live_ds)} not exported")
# Families the daemon exports that no panel shows.
shown = {f for f in families if any(u == f or u.startswith(f + "_") for u in used)}
d.check(shown == families, f"exported but not on the dashboard: {sorted(families - shown)}")
d.log(f"PASS: {len(queries)} dashboard queries and {len(d.alert_queries())} alerts name only live "
      f"series; all {len(families)} exported families are on the dashboard")
