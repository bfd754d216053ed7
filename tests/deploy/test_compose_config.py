"""deploy_compose_config: deploy/docker-compose.yml is valid for `docker-compose config`
(Debian docker-compose 1.29) and wires the pieces together: the daemon's volumes, secrets,
limits and health check; Prometheus' scrape target and retention; Grafana's provisioning;
and the dashboard/alert queries name only metrics of the daemon's spec, covering all of them.
The same queries are checked against a live /metrics in deploy_dashboard_metrics."""
import json
import os

import yaml

import deploy_lib as d

cfg, warnings = d.compose_config()
d.log("docker-compose config: OK" + (f" (stderr: {warnings.strip()})" if warnings.strip() else ""))
services = cfg["services"]
d.check(set(services) == {"deltaserved", "prometheus", "grafana"}, f"services: {sorted(services)}")

# --- deltaserved
ds = services["deltaserved"]
env = ds["environment"]
unknown = set(env) - set(d.DAEMON_ENV)
d.check(not unknown, f"deltaserved environment has variables no flag reads: {sorted(unknown)}")
for var in ("DELTASERVE_BASE", "DELTASERVE_DB", "DELTASERVE_LISTEN", "DELTASERVE_METRICS_LISTEN",
            "DELTASERVE_CONFIG"):
    d.check(env.get(var), f"deltaserved must set {var}")
vols = {v.split(":")[1]: v for v in ds["volumes"]}
d.check(env["DELTASERVE_DB"] in vols, f"no volume for the RocksDB dir {env['DELTASERVE_DB']}: {vols}")
d.check(not vols[env["DELTASERVE_DB"]].startswith("/"), "the RocksDB dir must be a named volume")
model_mount = [t for t in vols if env["DELTASERVE_BASE"].startswith(t + "/")]
d.check(model_mount and vols[model_mount[0]].endswith(":ro"),
        f"the base model {env['DELTASERVE_BASE']} must come from a read-only volume: {vols}")
secret_names = [s["source"] for s in ds["secrets"]]
d.check(env["DELTASERVE_CONFIG"] == "/run/secrets/" + secret_names[0],
        "DELTASERVE_CONFIG must be the compose secret's mount path")
d.check(cfg["secrets"][secret_names[0]]["file"].endswith("/deploy/secrets/tenants.json"),
        "the tenants/tokens config comes from a file secret")
d.check(ds.get("restart") in ("unless-stopped", "always"), "deltaserved needs a restart policy")
d.check(ds.get("mem_limit") and ds.get("cpus"), "deltaserved needs resource limits")
d.check(ds["healthcheck"]["test"] == ["CMD", "deltaserve-healthcheck"], "health check command")
grace = ds["stop_grace_period"]
d.check(grace.endswith("s") and int(grace[:-1]) > int(env["DELTASERVE_DRAIN_SECONDS"]),
        f"stop_grace_period {grace} must exceed the drain deadline {env['DELTASERVE_DRAIN_SECONDS']} s")
grpc_port = env["DELTASERVE_LISTEN"].rsplit(":", 1)[1]
metrics_port = env["DELTASERVE_METRICS_LISTEN"].rsplit(":", 1)[1]
targets = {str(p["target"]) if isinstance(p, dict) else p.rsplit(":", 1)[1].split("/")[0]
           for p in ds["ports"]}
d.check({grpc_port, metrics_port} <= targets, f"ports {targets} must publish {grpc_port} and {metrics_port}")

# --- prometheus: scrapes deltaserved:<metrics port>, retention flag, config mounted
prom = services["prometheus"]
d.check(any(a.startswith("--storage.tsdb.retention.time=") for a in prom["command"]),
        "prometheus needs a retention flag")
with open(os.path.join(d.DEPLOY_DIR, "prometheus", "prometheus.yml")) as f:
    pcfg = yaml.safe_load(f)
job = [j for j in pcfg["scrape_configs"] if j["job_name"] == "deltaserve"][0]
d.check(job["static_configs"][0]["targets"] == [f"deltaserved:{metrics_port}"],
        f"scrape target {job['static_configs'][0]['targets']} != deltaserved:{metrics_port}")
d.check(any(v.endswith("/deploy/prometheus:/etc/prometheus:ro") for v in prom["volumes"]),
        "prometheus must mount deploy/prometheus read-only")

# --- grafana: provisioning + dashboards from files, datasource uid the dashboard uses
graf = services["grafana"]
d.check(any("/deploy/grafana/provisioning:/etc/grafana/provisioning" in v for v in graf["volumes"]),
        "grafana provisioning mount")
d.check(graf["environment"].get("GF_SECURITY_ADMIN_PASSWORD__FILE", "").startswith("/run/secrets/"),
        "grafana admin password from a secret file")
with open(os.path.join(d.DEPLOY_DIR, "grafana", "provisioning", "datasources", "prometheus.yml")) as f:
    ds_prov = yaml.safe_load(f)["datasources"][0]
d.check(ds_prov["url"] == "http://prometheus:9090", f"datasource url {ds_prov['url']}")
with open(os.path.join(d.DEPLOY_DIR, "grafana", "provisioning", "dashboards", "deltaserve.yml")) as f:
    dprov = yaml.safe_load(f)["providers"][0]
d.check(any(v.endswith(":" + dprov["options"]["path"] + ":ro") for v in graf["volumes"]),
        "dashboards directory mounted where the provider reads it")
with open(d.dashboard_path()) as f:
    dash = json.load(f)
dsvar = [v for v in dash["templating"]["list"] if v["name"] == "datasource"][0]
d.check(dsvar["current"]["value"] == ds_prov["uid"], "dashboard default datasource = provisioned uid")
ids = []
stack = list(dash["panels"])
while stack:
    p = stack.pop()
    ids.append(p["id"])
    stack += p.get("panels", [])
d.check(len(ids) == len(set(ids)), "panel ids must be unique")

# --- every query names only spec metrics, and the dashboard covers every spec family
known = d.expand_series_names(d.SPEC_METRICS)
used, used_process = set(), set()
queries = d.dashboard_queries()
for title, ref, expr in queries:
    names = d.deltaserve_names_in(expr)
    d.check(names or 'job="deltaserve"' in expr, f"panel '{title}' {ref} names no deltaserve metric: {expr}")
    d.check(names <= known, f"panel '{title}' {ref} names unknown metrics {sorted(names - known)}")
    used |= names
    process = d.process_names_in(expr)
    d.check(process <= set(d.PROCESS_METRICS),
            f"panel '{title}' {ref} names unknown metrics {sorted(process - set(d.PROCESS_METRICS))}")
    d.check(not process or 'job="deltaserve"' in expr,
            f"panel '{title}' {ref}: process_* series need job=\"deltaserve\" (every job has them)")
    used_process |= process
for alert, expr in d.alert_queries():
    names = d.deltaserve_names_in(expr)
    d.check(names <= known, f"alert {alert} names unknown metrics {sorted(names - known)}")
families_used = {n for n in d.SPEC_METRICS if any(u == n or u.startswith(n + "_") for u in used)}
missing = set(d.SPEC_METRICS) - families_used
d.check(not missing, f"dashboard shows no panel for {sorted(missing)}")
unshown = {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
           "process_max_fds", "process_start_time_seconds"} - used_process
d.check(not unshown, f"dashboard shows no panel for {sorted(unshown)}")
d.log(f"PASS: compose file valid; {len(queries)} dashboard queries over "
      f"{len(families_used)}/{len(d.SPEC_METRICS)} metric families, all in the spec")
