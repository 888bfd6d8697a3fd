#!/usr/bin/env python3
"""Validates the deployment files in deploy/ (run by scripts/test; no cluster needed).

    python deploy/validate.py --binary PATH/TO/openmonetize

1. Schemas. Every Kubernetes manifest (deploy/k8s/*.yaml and deploy/k8s/examples/*.yaml)
   against the Kubernetes JSON schemas bundled in PyPI's `kubernetes-validate`, strict
   (unknown fields are errors), for the oldest and the newest Kubernetes version we
   support; a kind the schemas do not know is an error too (the tool only warns).
   deploy/compose.yaml against the compose specification's schema bundled in PyPI's
   `check-jsonschema` (`vendor.compose-spec`).
2. What schemas cannot see:
   - the job's StatefulSet, its env and the peers file agree: replicas = OM_PROCESSES =
     lines of the hosts file, line i = `<sts>-i.<headless service>.<ns>.svc.cluster.local:
     <timely port>`, OM_PROCESS from the pod-index label, OM_HOSTS = the mounted file;
   - every Service selects some workload's pods and names ports they have;
   - every ConfigMap and Secret a pod uses exists here, and every `$(VAR)` in args is
     defined (Kubernetes would pass an undefined one through as literal text);
   - compose `depends_on` names services that exist.
3. Against the real binary: every `openmonetize` subcommand and flag used by a manifest
   or the compose file is in that subcommand's `--help`, and every TOML config in the
   ConfigMap loads (through `openmonetize run` over an empty input into memory).

Exits 1 with every problem listed when anything is wrong.
"""

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
K8S_VERSIONS = ["1.28.0", "1.37.0"]  # 1.28: the first with the pod-index label (beta)
KINDS = {"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment"}
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
WORKLOADS = {"StatefulSet", "Deployment"}

problems = []


def problem(text):
    problems.append(text)


def load_k8s(files):
    docs = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc is not None:
                docs.append((f, doc))
    return docs


def schemas(venv_bin, k8s_files):
    for version in K8S_VERSIONS:
        out = subprocess.run(
            [str(venv_bin / "kubernetes-validate"), "--strict", "-k", version]
            + [str(f) for f in k8s_files],
            capture_output=True,
            text=True,
        )
        lines = (out.stdout + out.stderr).splitlines()
        bad = [l for l in lines if not l.startswith("INFO ")]
        if out.returncode != 0 or bad:
            problem(f"kubernetes-validate (Kubernetes {version}):\n    " + "\n    ".join(bad or lines))
        else:
            print(f"kubernetes-validate --strict -k {version}: {len(lines)} resources passed")
    out = subprocess.run(
        [str(venv_bin / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        problem("compose.yaml against the compose specification:\n" + out.stdout + out.stderr)
    else:
        print("check-jsonschema vendor.compose-spec: compose.yaml passed")


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def containers(doc):
    return pod_spec(doc).get("containers", [])


def env_value(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e
    return None


def cross_checks(docs):
    by_kind = {}
    for f, doc in docs:
        kind = doc.get("kind")
        if kind not in KINDS:
            problem(f"{f.name}: kind {kind} is not one we deploy ({', '.join(sorted(KINDS))})")
            continue
        by_kind.setdefault(kind, {})[doc["metadata"]["name"]] = doc
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    services = by_kind.get("Service", {})
    workloads = {n: d for k in WORKLOADS for n, d in by_kind.get(k, {}).items()}

    # References from pods: ConfigMaps, Secrets, $(VAR).
    for name, w in workloads.items():
        spec = pod_spec(w)
        for v in spec.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problem(f"{name}: volume {v['name']} names a missing ConfigMap {v['configMap']['name']}")
        for c in containers(w):
            defined = {e["name"] for e in c.get("env", [])}
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    cm = configmaps.get(src["configMapRef"]["name"])
                    if cm is None:
                        problem(f"{name}: envFrom names a missing ConfigMap {src['configMapRef']['name']}")
                    else:
                        defined |= set(cm.get("data", {}))
                if "secretRef" in src:
                    s = secrets.get(src["secretRef"]["name"])
                    if s is None:
                        problem(f"{name}: envFrom names a missing Secret {src['secretRef']['name']}")
                    else:
                        defined |= set(s.get("stringData", {})) | set(s.get("data", {}))
            for arg in c.get("args", []) + c.get("command", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                    if var not in defined:
                        problem(f"{name}: args use $({var}), which no env or envFrom defines")

    # Services select pods and name their ports.
    for sname, svc in services.items():
        selector = svc["spec"].get("selector", {})
        targets = [
            w for w in workloads.values()
            if selector and all(w["spec"]["template"]["metadata"].get("labels", {}).get(k) == v
                                for k, v in selector.items())
        ]
        if not targets:
            problem(f"Service {sname}: its selector {selector} matches no workload's pods")
            continue
        port_names = {p.get("name") for w in targets for c in containers(w) for p in c.get("ports", [])}
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            if isinstance(tp, str) and tp not in port_names:
                problem(f"Service {sname}: targetPort {tp} is no container port of its pods")

    # The job's cluster wiring.
    for name, sts in by_kind.get("StatefulSet", {}).items():
        ns = sts["metadata"].get("namespace", "default")
        replicas = sts["spec"].get("replicas", 1)
        headless = services.get(sts["spec"]["serviceName"])
        if headless is None or headless["spec"].get("clusterIP") != "None":
            problem(f"StatefulSet {name}: serviceName {sts['spec']['serviceName']} is not a headless Service here")
        if sts["spec"].get("podManagementPolicy") != "Parallel":
            problem(f"StatefulSet {name}: podManagementPolicy must be Parallel (all peers start together)")
        (c,) = containers(sts)
        procs = env_value(c, "OM_PROCESSES")
        if procs is None or str(procs.get("value")) != str(replicas):
            problem(f"StatefulSet {name}: OM_PROCESSES must be the replicas ({replicas}), is {procs}")
        index = env_value(c, "OM_PROCESS")
        if index is None or index.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != POD_INDEX:
            problem(f"StatefulSet {name}: OM_PROCESS must come from {POD_INDEX}")
        hosts = env_value(c, "OM_HOSTS")
        if hosts is None:
            problem(f"StatefulSet {name}: no OM_HOSTS")
            continue
        path = pathlib.PurePosixPath(hosts["value"])
        volumes = {v["name"]: v for v in pod_spec(sts).get("volumes", [])}
        found = None
        for m in c.get("volumeMounts", []):
            mount = pathlib.PurePosixPath(m["mountPath"])
            v = volumes.get(m["name"], {})
            if "configMap" in v and "subPath" not in m and path.parent == mount:
                found = (v["configMap"]["name"], path.name)
        if found is None:
            problem(f"StatefulSet {name}: OM_HOSTS {path} is not a file of a mounted ConfigMap")
            continue
        cm = configmaps.get(found[0], {})
        text = cm.get("data", {}).get(found[1])
        if text is None:
            problem(f"StatefulSet {name}: ConfigMap {found[0]} has no key {found[1]} (OM_HOSTS)")
            continue
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        lines = [l for l in text.splitlines() if l.strip()]
        want = [f"{name}-{i}.{sts['spec']['serviceName']}.{ns}.svc.cluster.local:{ports.get('timely')}"
                for i in range(replicas)]
        if lines != want:
            problem(f"StatefulSet {name}: the hosts file must be, line i = process i,\n    "
                    + "\n    ".join(want) + "\n  but is\n    " + "\n    ".join(lines))
        else:
            print(f"StatefulSet {name}: {replicas} processes, OM_PROCESS from the pod index, hosts file agrees")


def compose_checks(compose):
    services = compose.get("services", {})
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problem(f"compose service {name}: depends_on names no service {dep}")


def invocations(docs, compose):
    """(where, args) of every `openmonetize` run by a manifest or the compose file."""
    out = []
    for f, doc in docs:
        if doc.get("kind") in WORKLOADS:
            for c in containers(doc):
                if "openmonetize" in c.get("image", ""):
                    out.append((f"{f.name}: {c['name']}", c.get("command", []) + c.get("args", [])))
    for name, svc in compose.get("services", {}).items():
        if "openmonetize" in str(svc.get("image", "")) and "command" in svc:
            out.append((f"compose.yaml: {name}", svc["command"]))
    return out


def binary_checks(binary, calls, configmaps):
    helps = {}
    for where, args in calls:
        if not args:
            problem(f"{where}: no subcommand")
            continue
        sub = args[0]
        if sub not in helps:
            r = subprocess.run([binary, sub, "--help"], capture_output=True, text=True)
            helps[sub] = r.stdout if r.returncode == 0 else None
        if helps[sub] is None:
            problem(f"{where}: `openmonetize {sub}` is not a subcommand")
            continue
        known = set(re.findall(r"(--[a-z][a-z0-9-]*)", helps[sub]))
        for a in args[1:]:
            if a.startswith("--"):
                flag = a.split("=", 1)[0]
                if flag not in known:
                    problem(f"{where}: `openmonetize {sub}` has no flag {flag}")
    print(f"flags of {len(calls)} openmonetize invocations checked against --help")
    with tempfile.TemporaryDirectory() as tmp:
        for cm in configmaps:
            for key, text in cm.get("data", {}).items():
                if not key.endswith(".toml"):
                    continue
                f = pathlib.Path(tmp) / key
                f.write_text(text)
                r = subprocess.run(
                    [binary, "run", "--config", str(f), "--events", "file:/dev/null",
                     "--data", "memory://validate", "--workers", "1", "--quiet"],
                    capture_output=True, text=True, env={"RUST_BACKTRACE": "0", "PATH": "/usr/bin:/bin"},
                )
                if r.returncode != 0:
                    problem(f"ConfigMap {cm['metadata']['name']} key {key} does not load:\n{r.stderr}")
                else:
                    print(f"ConfigMap {cm['metadata']['name']} {key}: loads")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="the openmonetize binary to check flags and configs with")
    args = ap.parse_args()
    venv_bin = pathlib.Path(sys.executable).parent
    k8s_files = sorted((DEPLOY / "k8s").glob("*.yaml")) + sorted((DEPLOY / "k8s" / "examples").glob("*.yaml"))
    if not k8s_files:
        problem("no manifests in deploy/k8s")
    schemas(venv_bin, k8s_files)
    docs = load_k8s(k8s_files)
    cross_checks(docs)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    compose_checks(compose)
    configmaps = [d for _, d in docs if d.get("kind") == "ConfigMap"]
    binary_checks(args.binary, invocations(docs, compose), configmaps)
    if problems:
        print(f"\n{len(problems)} problem(s) in deploy/:", file=sys.stderr)
        for p in problems:
            print(f"- {p}", file=sys.stderr)
        sys.exit(1)
    print("deploy/: all manifests valid")


if __name__ == "__main__":
    main()
