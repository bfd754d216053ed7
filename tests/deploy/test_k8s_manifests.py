"""deploy_k8s_manifests: deploy/k8s builds with `kubectl kustomize` (offline; falls back to
reading the files when kubectl is absent) and is consistent with the image and the daemon:
StatefulSet with a per-replica RocksDB PVC, headless + client Services, gRPC probes on the
gRPC port, scrape annotations / ServiceMonitor on the metrics port, ConfigMap keys that are
daemon variables, Secret mounted where DELTASERVE_CONFIG points, non-root uid of the image."""
import json
import os
import re
import shutil
import subprocess

import yaml

import deploy_lib as d

k8s = os.path.join(d.DEPLOY_DIR, "k8s")
kubectl = shutil.which("kubectl")
if kubectl:
    r = d.run([kubectl, "kustomize", k8s], what="kubectl kustomize deploy/k8s")
    docs = [x for x in yaml.safe_load_all(r.stdout) if x]
    d.log(f"kubectl kustomize: {len(docs)} objects")
else:
    with open(os.path.join(k8s, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    docs = []
    for res in kust["resources"]:
        with open(os.path.join(k8s, res)) as f:
            docs += [x for x in yaml.safe_load_all(f) if x]
    d.log(f"kubectl not installed: read {len(docs)} objects from the kustomization's files")

by_kind = {}
for o in docs:
    by_kind.setdefault(o["kind"], []).append(o)
for kind in ("Namespace", "ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet",
             "PodDisruptionBudget"):
    d.check(kind in by_kind, f"no {kind} in deploy/k8s")
if kubectl:
    d.check(all(o["metadata"].get("namespace") == "deltaserve" for o in docs if o["kind"] != "Namespace"),
            "every namespaced object in namespace deltaserve")

cm = by_kind["ConfigMap"][0]["data"]
unknown = set(cm) - set(d.DAEMON_ENV)
d.check(not unknown, f"ConfigMap keys no daemon flag reads: {sorted(unknown)}")
sts = by_kind["StatefulSet"][0]
spec = sts["spec"]
pod = spec["template"]["spec"]
c = pod["containers"][0]
services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
headless = services[spec["serviceName"]]
d.check(headless["spec"]["clusterIP"] == "None", "serviceName must be the headless service")
labels = spec["template"]["metadata"]["labels"]
for s in services.values():
    d.check(all(labels.get(k) == v for k, v in s["spec"]["selector"].items()),
            f"service {s['metadata']['name']} selects no pod")
d.check(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()), "sts selector")

ports = {p["name"]: p["containerPort"] for p in c["ports"]}
grpc_port = int(cm["DELTASERVE_LISTEN"].rsplit(":", 1)[1])
metrics_port = int(cm["DELTASERVE_METRICS_LISTEN"].rsplit(":", 1)[1])
d.check(ports == {"grpc": grpc_port, "metrics": metrics_port}, f"container ports {ports}")
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    d.check(c[probe]["grpc"]["port"] == grpc_port, f"{probe} must be a gRPC probe on {grpc_port}")
d.check(c["readinessProbe"]["grpc"].get("service") == "deltaserve.v1.DeltaService",
        "readiness checks the DeltaService health status")
ann = spec["template"]["metadata"]["annotations"]
d.check(ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == metrics_port
        and ann["prometheus.io/path"] == "/metrics", f"scrape annotations {ann}")
d.check(pod["terminationGracePeriodSeconds"] > int(cm["DELTASERVE_DRAIN_SECONDS"]),
        "terminationGracePeriodSeconds must exceed the drain deadline")
with open(os.path.join(d.DOCKER_DIR, "Dockerfile")) as f:
    uid = int(re.search(r"useradd[^\n]*--uid (\d+)", f.read()).group(1))
d.check(pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsNonRoot"],
        f"pod must run as the image's user {uid}")

mounts = {m["name"]: m for m in c["volumeMounts"]}
vcts = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
d.check(mounts["db"]["mountPath"] == cm["DELTASERVE_DB"] and "db" in vcts
        and vcts["db"]["spec"]["accessModes"] == ["ReadWriteOnce"],
        "each replica's RocksDB dir is its own ReadWriteOnce PVC")
d.check(cm["DELTASERVE_BASE"].startswith(mounts["models"]["mountPath"] + "/") and mounts["models"]["readOnly"],
        "the base model comes from the read-only models volume")
vols = {v["name"]: v for v in pod["volumes"]}
secret_name = vols["secrets"]["secret"]["secretName"]
d.check(os.path.dirname(cm["DELTASERVE_CONFIG"]) == mounts["secrets"]["mountPath"],
        "DELTASERVE_CONFIG must lie in the mounted Secret")
with open(os.path.join(k8s, "secret.example.yaml")) as f:
    secret = yaml.safe_load(f)
d.check(secret["metadata"]["name"] == secret_name, "secret.example.yaml names the mounted Secret")
key = os.path.basename(cm["DELTASERVE_CONFIG"])
json.loads(secret["stringData"][key])  # the example config is valid JSON

with open(os.path.join(k8s, "servicemonitor.yaml")) as f:
    sm = yaml.safe_load(f)
sel = sm["spec"]["selector"]["matchLabels"]
picked = [n for n, s in services.items() if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())]
d.check(picked == [spec["serviceName"]], f"ServiceMonitor must select only the headless service, got {picked}")
d.check(any(p["name"] == sm["spec"]["endpoints"][0]["port"] for p in headless["spec"]["ports"]),
        "ServiceMonitor port name exists on the service")
d.log(f"PASS: k8s manifests consistent ({len(docs)} objects, probes on :{grpc_port}, metrics :{metrics_port})")
