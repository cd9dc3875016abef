"""The checks of scripts/check-deploy, which installs the tools and runs
this with the venv's Python. Each check prints `ok` or `FAIL` and why; the
last line counts them, and any failure exits 1.

What is checked:
- the Dockerfile, parsed by BuildKit's parser (`dockerfile` on PyPI): a
  build stage and a slim runtime stage, a non-root user, the default
  command, a health check on /healthz at the config's port, and every COPY
  source present in the build context that .dockerignore leaves;
- the Kubernetes manifests, rendered by `kubectl kustomize` (base/ and
  example/, which adds both components): every core object passes
  `kubernetes-validate --strict`; the Prometheus Operator objects pass
  their CRDs' schemas (validate-crds.mjs, not strict: CRD schemas allow
  unknown fields); the objects fit together (probes, drain, ports,
  selectors, the Secret's keys, the Redis address);
- the shipped keel.toml files pass `keel check-config`;
- the PrometheusRule is the alert file: the committed file is the
  generator's output, its rendered groups equal the alert file's, and
  promtool accepts them.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(os.environ["KEEL_ROOT"])
KUBECTL = os.environ["KEEL_KUBECTL"]
VALIDATE = os.environ["KEEL_KUBERNETES_VALIDATE"]
KEEL = os.environ["KEEL_BIN"]
CRD_MODELS = os.environ["KEEL_CRD_MODELS"]
K8S = ROOT / "deploy/kubernetes"
ALERTS = ROOT / "deploy/prometheus/keel-alerts.yml"
# The CRD kinds kubernetes-validate has no schema for (checked by node).
CRD_KINDS = {"PrometheusRule", "ServiceMonitor"}

results = {"ok": 0, "fail": 0}


def check(name, ok, why=""):
    results["ok" if ok else "fail"] += 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not why else f": {why}"))
    return ok


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def duration_secs(text):
    """Keel's durations: "30s", "250ms", "5m", "1h"."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def listen_port(config_text):
    return int(tomllib.loads(config_text)["server"]["listen"].rsplit(":", 1)[1])


def env_vars(config_text):
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", config_text))


# ---------------------------------------------------------------- Dockerfile


def dockerignore_excludes(patterns, path):
    """Docker's rule: the last pattern matching the path or one of its
    parents decides; `!` re-includes."""

    def regex(p):
        out, i = "", 0
        while i < len(p):
            if p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = os.path.normpath(raw[1:] if neg else raw)
        if any(regex(pat).match(p) for p in prefixes):
            excluded = not neg
    return excluded


def check_dockerfile(config_text):
    df = ROOT / "Dockerfile"
    cmds = dockerfile.parse_file(str(df))
    known = {
        "FROM", "ARG", "RUN", "COPY", "ADD", "USER", "ENV", "EXPOSE", "HEALTHCHECK",
        "ENTRYPOINT", "CMD", "WORKDIR", "LABEL", "STOPSIGNAL", "VOLUME", "SHELL",
    }
    unknown = [c.cmd for c in cmds if c.cmd not in known]
    check("Dockerfile: instructions known to Docker", not unknown, f"unknown {unknown}")

    stages, stage = [], None
    for c in cmds:
        if c.cmd == "FROM":
            name = c.value[2] if len(c.value) == 3 and c.value[1].upper() == "AS" else None
            stage = {"image": c.value[0], "name": name, "cmds": []}
            stages.append(stage)
        elif stage is not None:
            stage["cmds"].append(c)
    check("Dockerfile: multi-stage (build, then runtime)", len(stages) >= 2, f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return
    build, final = stages[0], stages[-1]
    check("Dockerfile: build stage builds keel in release",
          any(c.cmd == "RUN" and "cargo build --release" in c.value[0] and "-p keel" in c.value[0]
              for c in build["cmds"]), "no `cargo build --release ... -p keel`")
    check("Dockerfile: slim or distroless runtime image",
          re.search(r"(-slim$|distroless)", final["image"]) is not None, final["image"])
    names = {s["name"] for s in stages if s["name"]}
    for c in final["cmds"]:
        for flag in c.flags:
            if flag.startswith("--from="):
                check(f"Dockerfile: {c.original!r} copies from a stage", flag[7:] in names, f"stages {names}")

    users = [c.value[0] for c in final["cmds"] if c.cmd == "USER"]
    user = users[-1].split(":")[0] if users else "root"
    check("Dockerfile: runtime runs as a non-root user", user not in ("root", "0"), f"USER {user}")

    def json_value(cmd):
        found = [c for c in final["cmds"] if c.cmd == cmd]
        return list(found[-1].value) if found and found[-1].json else None

    command = (json_value("ENTRYPOINT") or []) + (json_value("CMD") or [])
    check("Dockerfile: default command is `keel serve --config /etc/keel/keel.toml`",
          command == ["keel", "serve", "--config", "/etc/keel/keel.toml"], f"{command}")

    port = listen_port(config_text)
    exposed = [v for c in final["cmds"] if c.cmd == "EXPOSE" for v in c.value]
    check("Dockerfile: EXPOSE is the config's listen port", exposed == [str(port)], f"{exposed} vs {port}")
    env = {}
    for c in final["cmds"]:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2]))
    health = [c for c in final["cmds"] if c.cmd == "HEALTHCHECK"]
    probe = " ".join(health[-1].value) if health else ""
    for name, value in env.items():
        probe = probe.replace(f"${name}", value).replace(f"${{{name}}}", value)
    check("Dockerfile: HEALTHCHECK gets /healthz on the config's port",
          f"http://127.0.0.1:{port}/healthz" in probe and "curl -f" in probe, probe or "no HEALTHCHECK")
    installs = " ".join(c.value[0] for c in final["cmds"] if c.cmd == "RUN")
    check("Dockerfile: the runtime has what the health check and preStop run (curl, sleep)",
          "curl" in installs and final["image"].startswith("debian:"), "install curl in a Debian image")

    ignore = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True).stdout.split()
    for c in stages[0]["cmds"] + final["cmds"]:
        if c.cmd != "COPY" or any(f.startswith("--from=") for f in c.flags):
            continue
        for src in c.value[:-1]:
            files = [f for f in tracked if f == src or f.startswith(src.rstrip("/") + "/")]
            left_out = [f for f in files if dockerignore_excludes(ignore, f)]
            check(f"Dockerfile: COPY {src} is in the build context",
                  files and not left_out, f"missing or .dockerignored: {left_out[:3] or src}")
    default_config = [c.value for c in final["cmds"] if c.cmd == "COPY" and c.value[-1] == "/etc/keel/keel.toml"]
    check("Dockerfile: the image's default config is deploy/kubernetes/base/keel.toml",
          default_config == [("deploy/kubernetes/base/keel.toml", "/etc/keel/keel.toml")], f"{default_config}")
    stray = [f for f in tracked if f.startswith(("bench/", "fuzz/", "README")) and not dockerignore_excludes(ignore, f)]
    check("Dockerfile: .dockerignore leaves out what the build does not use", not stray, f"{stray[:3]}")


# ---------------------------------------------------------------- Kubernetes


def render(directory):
    out = run([KUBECTL, "kustomize", str(directory)])
    if not check(f"kubectl kustomize {directory.relative_to(ROOT)}", out.returncode == 0, out.stderr.strip()):
        return None, None
    return out.stdout, [o for o in yaml.safe_load_all(out.stdout) if o]


def strict_validate(name, text, objects):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        out = run([VALIDATE, "--strict", f.name])
    lines = out.stdout.splitlines()
    core = [o for o in objects if o["kind"] not in CRD_KINDS]
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    bad = [line for line in lines if not line.startswith("INFO")
           and not any(f"kind {k} " in line for k in CRD_KINDS)]
    check(f"kubernetes-validate --strict {name}: {len(core)} core objects",
          out.returncode == 0 and not bad and len(passed) == len(core),
          "\n  ".join(bad) or f"{len(passed)} passed of {len(core)}; rc {out.returncode} {out.stderr.strip()}")


def one(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found[0] if len(found) == 1 else None


def check_keel_config(name, text):
    env = dict(os.environ, **{v: "placeholder" for v in env_vars(text)})
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text)
        f.flush()
        out = run([KEEL, "check-config", f.name], env=env)
    check(f"keel check-config {name}", out.returncode == 0, (out.stderr or out.stdout).strip())


def check_keel_objects(name, objects, with_components):
    dep, svc = one(objects, "Deployment", "keel"), one(objects, "Service", "keel")
    if not check(f"{name}: a keel Deployment and Service", dep is not None and svc is not None):
        return
    spec = dep["spec"]["template"]["spec"]
    keel = next(c for c in spec["containers"] if c["name"] == "keel")
    check(f"{name}: 2 replicas", dep["spec"].get("replicas") == 2, f"{dep['spec'].get('replicas')}")

    mount = next(m for m in keel["volumeMounts"] if m["mountPath"] == "/etc/keel")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = next((o for o in objects if o["kind"] == "ConfigMap"
               and o["metadata"]["name"] == volume["configMap"]["name"]), None)
    if not check(f"{name}: the config volume's ConfigMap is in the manifest", cm is not None):
        return
    config_text = cm["data"]["keel.toml"]
    config = tomllib.loads(config_text)
    check_keel_config(f"{name}'s ConfigMap", config_text)
    check(f"{name}: keel runs with the mounted config",
          keel.get("args", [])[:3] == ["serve", "--config", "/etc/keel/keel.toml"], f"{keel.get('args')}")

    port = listen_port(config_text)
    ports = {p["name"]: p["containerPort"] for p in keel["ports"]}
    check(f"{name}: container port `http` is the config's listen port", ports.get("http") == port, f"{ports} vs {port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = keel.get(probe, {}).get("httpGet", {})
        check(f"{name}: {probe} on {path}", got.get("path") == path and got.get("port") in ("http", port), f"{got}")

    drain = duration_secs(config["server"].get("drain_timeout", "30s"))
    pre = keel.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else None
    grace = spec.get("terminationGracePeriodSeconds")
    check(f"{name}: terminationGracePeriodSeconds = preStop pause + drain_timeout + 5 s",
          pause is not None and grace == pause + math.ceil(drain) + 5,
          f"grace {grace}, preStop {pre}, drain_timeout {drain} s")

    for d in (o for o in objects if o["kind"] == "Deployment"):
        pod = d["spec"]["template"]["spec"]
        sc = pod.get("securityContext", {})
        check(f"{name}: {d['metadata']['name']} runs as non-root",
              sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) > 0, f"{sc}")
        for c in pod["containers"]:
            csc, res = c.get("securityContext", {}), c.get("resources", {})
            check(f"{name}: {d['metadata']['name']}/{c['name']} drops privileges",
                  csc.get("allowPrivilegeEscalation") is False and csc.get("capabilities", {}).get("drop") == ["ALL"]
                  and csc.get("readOnlyRootFilesystem") is True, f"{csc}")
            check(f"{name}: {d['metadata']['name']}/{c['name']} has CPU and memory requests and a memory limit",
                  {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}), f"{res}")

    labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = svc["spec"]["selector"]
    check(f"{name}: the Service selects keel's pods", all(labels.get(k) == v for k, v in sel.items()), f"{sel}")
    target = svc["spec"]["ports"][0]["targetPort"]
    check(f"{name}: the Service targets the container port", target in ports or target in ports.values(), f"{target}")

    secret_names = [e["secretRef"]["name"] for e in keel.get("envFrom", []) if "secretRef" in e]
    check(f"{name}: provider keys come from a Secret", len(secret_names) == 1, f"{keel.get('envFrom')}")
    if with_components:
        secret = next((o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] in secret_names), None)
        keys = set((secret or {}).get("data", {})) | set((secret or {}).get("stringData", {}))
        check(f"{name}: the Secret holds every ${{VAR}} of keel.toml", secret is not None and env_vars(config_text) <= keys,
              f"needs {sorted(env_vars(config_text))}, has {sorted(keys)}")
        check_redis(name, objects, config)
        check_monitoring(name, objects, svc)


def check_redis(name, objects, config):
    url = config.get("store", {}).get("redis", "")
    m = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)(/\d+)?", url)
    svc = one(objects, "Service", "keel-redis")
    check(f"{name}: [store] redis is the Redis Service's address",
          m is not None and svc is not None and svc["metadata"]["name"] == m[1]
          and svc["spec"]["ports"][0]["port"] == int(m[2]), f"redis = {url!r}")
    dep = one(objects, "Deployment", "keel-redis")
    if check(f"{name}: a Redis Deployment", dep is not None):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        check(f"{name}: the Redis Service selects Redis's pods",
              all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()))
    base = (K8S / "base/keel.toml").read_text()
    component = (K8S / "components/redis/keel.toml").read_text()
    back = re.sub(r'^redis = "(redis://[^"]+)"\n(#[^\n]*\n)*required = false\n',
                  r'# redis = "\1"\n', component, flags=re.M)
    check("components/redis/keel.toml is base/keel.toml with [store] redis turned on",
          back == base and back != component, "they differ elsewhere: edit both")


def check_monitoring(name, objects, svc):
    sm = one(objects, "ServiceMonitor", "keel")
    if check(f"{name}: a ServiceMonitor", sm is not None):
        sel = sm["spec"]["selector"]["matchLabels"]
        check(f"{name}: the ServiceMonitor selects the keel Service",
              all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()), f"{sel}")
        ep = sm["spec"]["endpoints"][0]
        check(f"{name}: the ServiceMonitor scrapes /metrics on a Service port",
              ep.get("path") == "/metrics" and ep.get("port") in {p["name"] for p in svc["spec"]["ports"]}, f"{ep}")
    rule = one(objects, "PrometheusRule", "keel")
    alerts = yaml.safe_load(ALERTS.read_text())
    check(f"{name}: the PrometheusRule's groups equal deploy/prometheus/keel-alerts.yml",
          rule is not None and rule["spec"] == {"groups": alerts["groups"]} and set(alerts) == {"groups"},
          "run deploy/kubernetes/generate-prometheusrule")
    if rule is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
            yaml.safe_dump(rule["spec"], f)
            f.flush()
            out = run(["promtool", "check", "rules", f.name])
        check(f"{name}: promtool check rules on the PrometheusRule", out.returncode == 0, (out.stdout + out.stderr).strip())

    crds = [o for o in objects if o["kind"] in CRD_KINDS]
    # ES modules resolve packages from the script's own directory: run a copy
    # next to the installed node_modules.
    script = Path(CRD_MODELS) / "validate-crds.mjs"
    shutil.copyfile(ROOT / "scripts/deploy-check/validate-crds.mjs", script)
    out = run(["node", str(script)], input=json.dumps(crds))
    check(f"{name}: ServiceMonitor and PrometheusRule pass their CRD schemas", out.returncode == 0,
          (out.stdout + out.stderr).strip())


def main():
    base_config = (K8S / "base/keel.toml").read_text()
    check_keel_config("deploy/kubernetes/base/keel.toml", base_config)
    check_keel_config("deploy/kubernetes/components/redis/keel.toml", (K8S / "components/redis/keel.toml").read_text())
    check_dockerfile(base_config)

    generated = run([str(K8S / "generate-prometheusrule"), "--stdout"])
    committed = (K8S / "components/monitoring/prometheusrule.yaml").read_text()
    check("components/monitoring/prometheusrule.yaml is the generator's output",
          generated.returncode == 0 and generated.stdout == committed, "run deploy/kubernetes/generate-prometheusrule")

    for directory, with_components in ((K8S / "base", False), (K8S / "example", True)):
        text, objects = render(directory)
        if objects is None:
            continue
        name = str(directory.relative_to(K8S))
        strict_validate(name, text, objects)
        check_keel_objects(name, objects, with_components)

    print(f"deploy: {results['ok']} passed, {results['fail']} failed")
    sys.exit(1 if results["fail"] else 0)


if __name__ == "__main__":
    main()
