"""deploy_seconds_flags: deltaserved's duration flags (seconds) refuse what is not a finite
number >= 0.

Before, "--keepalive-seconds nan" started a server (NaN passed the ">= 1 s" check and
reached gRPC's millisecond argument as an undefined conversion) and "inf" was taken as
a duration. Each flag, on the command line or in its environment variable, must fail
start-up while parsing, naming the flag, before the base is opened; a valid value
passes parsing."""
import subprocess

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")

FLAGS = ["--health-interval-seconds", "--drain-seconds", "--stall-seconds",
         "--write-timeout-seconds", "--keepalive-seconds", "--keepalive-timeout-seconds",
         "--min-client-ping-seconds"]

for flag in FLAGS:
    for bad in ["nan", "inf", "-1", "abc", "1e30"]:
        d.refused_at_parse(deltaserved, [flag, bad], flag)
env = "DELTASERVE_" + "KEEPALIVE_SECONDS"
d.refused_at_parse(deltaserved, [], "--keepalive-seconds", {env: "nan"})

# A valid value gets past parsing: the failure is then the missing base, named.
for flag in FLAGS:
    r = subprocess.run([deltaserved, "--base", "/nonexistent/base.safetensors", flag, "5"],
                       env=d.clean_env(), capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    d.check(r.returncode != 0 and "nonexistent" in out,
            f"{flag} 5: wanted a start failure naming the missing base, got exit "
            f"{r.returncode}:\n{out}")
d.log("PASS: nan, inf, -1, abc, 1e30 refused on every duration flag; 5 accepted")
