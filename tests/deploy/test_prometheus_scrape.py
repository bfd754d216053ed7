"""deploy_prometheus_scrape: a real deltaserved and a real Prometheus server (Debian
package `prometheus`) on loopback. Prometheus runs the repository's own
deploy/prometheus/prometheus.yml (with its alert rules) changed only in the target
addresses and the scrape/evaluation interval (1 s). Through Prometheus' HTTP API the test
asserts that the daemon is up and its series are scraped, that the request and
streamed-bytes counters moved after a `deltactl pull` (exactly by the tensor bytes pulled), that every
dashboard query evaluates, and that the alert rules load and evaluate."""
import json
import os
import shutil
import tempfile
import urllib.parse

import yaml

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")
prometheus = d.need_tool("prometheus")

with tempfile.TemporaryDirectory(prefix="deploy-prom-") as tmp:
    ds = d.Deltaserve(tmp, deltaserved, deltactl)
    prom = None
    try:
        # The repository's config, adapted only in target addresses and intervals.
        with open(os.path.join(d.DEPLOY_DIR, "prometheus", "prometheus.yml")) as f:
            cfg = yaml.safe_load(f)
        prom_port = d.free_port()
        cfg["global"]["scrape_interval"] = "1s"
        cfg["global"]["evaluation_interval"] = "1s"
        for job in cfg["scrape_configs"]:
            job.pop("scrape_timeout", None)  # must not exceed the 1 s interval
            if job["job_name"] == "deltaserve":
                job["static_configs"][0]["targets"] = [f"127.0.0.1:{ds.metrics_port}"]
            elif job["job_name"] == "prometheus":
                job["static_configs"][0]["targets"] = [f"127.0.0.1:{prom_port}"]
        pdir = os.path.join(tmp, "prometheus")
        os.makedirs(pdir)
        with open(os.path.join(pdir, "prometheus.yml"), "w") as f:
            yaml.safe_dump(cfg, f)
        shutil.copy(os.path.join(d.DEPLOY_DIR, "prometheus", "alerts.yml"), pdir)
        prom = d.Daemon([prometheus, "--config.file=" + os.path.join(pdir, "prometheus.yml"),
                         "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
                         "--storage.tsdb.retention.time=1h",
                         f"--web.listen-address=127.0.0.1:{prom_port}"],
                        os.path.join(tmp, "prometheus.log"))
        api = f"http://127.0.0.1:{prom_port}/api/v1/"
        d.wait_until(lambda: d.http_get(f"http://127.0.0.1:{prom_port}/-/ready")[0] == 200, 30,
                     "Prometheus ready", prom)

        def query(expr):
            status, body = d.http_get(api + "query?" + urllib.parse.urlencode({"query": expr}))
            d.check(status == 200, f"query {expr!r}: HTTP {status}: {body[:300]}")
            doc = json.loads(body)
            d.check(doc["status"] == "success", f"query {expr!r}: {doc}")
            return doc["data"]["result"]

        def scalar(expr):
            r = query(expr)
            return float(r[0]["value"][1]) if r else None

        # 1. The daemon is a healthy target and its series are in the TSDB.
        d.wait_until(lambda: scalar('up{job="deltaserve"}') == 1.0, 20, 'up{job="deltaserve"} == 1', prom)
        targets = json.loads(d.http_get(api + "targets")[1])["data"]["activeTargets"]
        t = [x for x in targets if x["labels"]["job"] == "deltaserve"][0]
        d.check(t["health"] == "up" and t["scrapeUrl"] == ds.metrics_url(), f"target {t}")
        d.log(f"target {t['scrapeUrl']}: health {t['health']}, last error '{t['lastError']}'")
        base_bytes = scalar('deltaserve_base_bytes{job="deltaserve"}')
        want_base = d.safetensors_data_bytes(ds.base)
        d.check(base_bytes == want_base, f"deltaserve_base_bytes {base_bytes} != {want_base} data bytes of the base")
        d.check(scalar('deltaserve_base_tensors{job="deltaserve"}') == 3.0, "deltaserve_base_tensors != 3")

        # 2. A push and a pull move the counters, by the bytes that went over the wire.
        def streamed():
            return scalar('sum(deltaserve_streamed_bytes_total{job="deltaserve", method="StreamWeights"})') or 0.0

        def pulls_ok():
            return scalar('sum(deltaserve_requests_total{job="deltaserve", method="StreamWeights", code="OK"})') or 0.0
        before_bytes, before_pulls = streamed(), pulls_ok()
        delta = ds.compress()
        ds.push("deploy-test", delta)
        merged = ds.pull("deploy-test")
        pulled = d.safetensors_data_bytes(merged)
        d.log(f"pulled {pulled} tensor data bytes ({os.path.getsize(merged)} file bytes)")
        d.wait_until(lambda: pulls_ok() >= before_pulls + 1, 20,
                     "deltaserve_requests_total{method=StreamWeights,code=OK} to count the pull", prom)
        d.wait_until(lambda: streamed() >= before_bytes + pulled, 20,
                     "deltaserve_streamed_bytes_total to grow by the pulled bytes", prom)
        moved = streamed() - before_bytes
        d.check(moved == pulled, f"streamed bytes moved by {moved}, the pull carried {pulled} tensor bytes")
        d.log(f"Prometheus: StreamWeights OK requests {before_pulls:.0f} -> {pulls_ok():.0f}, "
              f"streamed bytes +{moved:.0f} (pulled {pulled})")
        uploaded = scalar('deltaserve_uploaded_bytes_total{job="deltaserve"}')
        d.check(uploaded == os.path.getsize(delta),
                f"deltaserve_uploaded_bytes_total {uploaded} != container size {os.path.getsize(delta)}")
        tasks = scalar('deltaserve_tenant_tasks{job="deltaserve", tenant="acme"}')
        d.wait_until(lambda: scalar('deltaserve_tenant_tasks{job="deltaserve", tenant="acme"}') == 1.0, 10,
                     "deltaserve_tenant_tasks{tenant=acme} == 1", prom)
        names = {r["metric"]["__name__"] for r in query('{job="deltaserve", __name__=~"deltaserve_.+"}')}
        missing = d.expand_series_names(d.SPEC_METRICS) - names
        d.check(not missing, f"series not scraped: {sorted(missing)}")
        d.log(f"{len(names)} deltaserve_* series names scraped, every spec family present")

        # A counter series born with the first pull has no earlier sample to take a rate
        # from: a second pull makes rate() > 0 (as a busy daemon's panels show).
        ds.pull("deploy-test")
        d.wait_until(lambda: pulls_ok() >= before_pulls + 2, 20, "the second pull counted", prom)

        def stream_rate():
            return query('sum by (method) (rate(deltaserve_requests_total{job="deltaserve"}[1m]))')

        # rate() needs two samples that differ: wait for them (scrapes slip under load).
        d.wait_until(lambda: any(r["metric"].get("method") == "StreamWeights" and float(r["value"][1]) > 0
                                 for r in stream_rate()), 30, "rate(StreamWeights requests) > 0", prom)

        # 3. Every dashboard query evaluates on this Prometheus (Grafana variables replaced).
        nonempty = 0
        for title, ref, expr in d.dashboard_queries():
            res = query(d.to_promql(expr))
            nonempty += bool(res)
        d.log(f"{len(d.dashboard_queries())} dashboard queries evaluated, {nonempty} with data")

        # 4. The alert rules are loaded and evaluate without error.
        def rules_ok():
            groups = json.loads(d.http_get(api + "rules")[1])["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return len(rules) == 4 and all(r["health"] == "ok" for r in rules) and rules
        rules = d.wait_until(rules_ok, 15, "4 alert rules evaluated with health ok", prom)
        firing = [r["name"] for r in rules if r["state"] != "inactive"]
        d.check(not firing, f"alerts pending/firing on a healthy daemon: {firing}")
        d.log("PASS: Prometheus scraped deltaserved; counters moved after the pull; "
              "dashboard queries and 4 alert rules evaluate")
    finally:
        if prom is not None:
            prom.terminate(10)
            prom.stop()
        ds.stop()
