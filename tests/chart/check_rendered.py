#!/usr/bin/env python3
"""Checks one `helm template` rendering of charts/outrigger.

Called by tests/chart/check.sh with the rendered YAML and the values files the
rendering used. It checks, and exits 1 listing every failure:

1. every object against the Kubernetes OpenAPI schemas of kubernetes-validate
   (strict: unknown fields fail) for each --k8s-version. monitoring.coreos.com
   objects (ServiceMonitor, PodMonitor, PrometheusRule) are skipped there: the
   package knows only built-in kinds. They get the structural and PromQL
   checks below instead. Any other kind without a schema is a failure.
2. what the chart promises, computed from the merged values: labels, the
   operator's args/env/probes/security context, the PDB, RBAC rules (exactly,
   so a broadened ClusterRole fails), Services, the webhook (selectors,
   failurePolicy, caBundle = the webhook Secret's CA), generated certificates
   (signed by their CA, the Service DNS names, key matching), monitoring
   objects, and every PromQL expression (alerts and dashboard) parsed with
   promql-parser; for the default values, also the defaults the chart's
   README documents.
"""

import argparse
import base64
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

import kubernetes_validate.utils as kv

failures = []


def fail(msg):
    failures.append(msg)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def kn(obj):
    return "%s/%s" % (obj.get("kind"), obj.get("metadata", {}).get("name"))


# ---------------------------------------------------------------- schemas

SKIP_GROUPS = ("monitoring.coreos.com/",)


def validate_schemas(docs, versions):
    skipped = set()
    for obj in docs:
        if obj["apiVersion"].startswith(SKIP_GROUPS):
            skipped.add(kn(obj))
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail("schema %s (k8s %s): %s: %s" % (kn(obj), e.version, path, e.message))
            except kv.SchemaNotFoundError as e:
                fail("schema %s: %s" % (kn(obj), e.message))
    return sorted(skipped)


# ---------------------------------------------------------------- helpers

def b64(s):
    return base64.b64decode(s).decode()


def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True,
                          text=True, timeout=30)


def check_certificate(server, secret, service, ns, domain):
    data = secret.get("data", {})
    if not check(set(data) == {"ca.crt", "tls.crt", "tls.key"},
                 "%s: keys %s, want ca.crt tls.crt tls.key" % (kn(secret), sorted(data))):
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for key in data:
            paths[key] = os.path.join(tmp, key)
            with open(paths[key], "w") as f:
                f.write(b64(data[key]))
        r = openssl("verify", "-CAfile", paths["ca.crt"], paths["tls.crt"])
        check(r.returncode == 0, "%s: tls.crt does not verify against ca.crt: %s"
              % (kn(secret), (r.stdout + r.stderr).strip()))
        r = openssl("x509", "-in", paths["tls.crt"], "-noout", "-ext", "subjectAltName")
        sans = set(re.findall(r"DNS:([^,\s]+)", r.stdout))
        want = {service, "%s.%s" % (service, ns), "%s.%s.svc" % (service, ns),
                "%s.%s.svc.%s" % (service, ns, domain)}
        check(sans == want, "%s: DNS names %s, want %s" % (kn(secret), sorted(sans), sorted(want)))
        pub_cert = openssl("x509", "-in", paths["tls.crt"], "-noout", "-pubkey").stdout
        pub_key = openssl("pkey", "-in", paths["tls.key"], "-pubout").stdout
        check(pub_cert and pub_cert == pub_key, "%s: tls.key does not match tls.crt" % kn(secret))
        r = openssl("x509", "-in", paths["ca.crt"], "-noout", "-ext", "basicConstraints")
        check("CA:TRUE" in r.stdout, "%s: ca.crt is not a CA" % kn(secret))
        # Still valid in 30 days.
        r = openssl("x509", "-in", paths["tls.crt"], "-noout", "-checkend", str(30 * 86400))
        check(r.returncode == 0, "%s: tls.crt expires within 30 days" % kn(secret))


def parse_promql(expr, where):
    import promql_parser
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser raises ValueError with the reason
        fail("PromQL %s: %s\n    %s" % (where, e, expr))


def grafana_to_promql(expr):
    """Grafana variables replaced by values Prometheus would see."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", ".*", expr)


# ---------------------------------------------------------------- chart checks

LABEL_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
              "app.kubernetes.io/component", "app.kubernetes.io/part-of",
              "app.kubernetes.io/managed-by", "helm.sh/chart"}

EXPECTED_CLUSTER_RULES = sorted([
    (("outrigger.dev",), ("resiliencepolicies",), ("get", "list", "watch")),
    (("outrigger.dev",), ("resiliencepolicies/status",), ("patch",)),
    (("",), ("services",), ("get", "list", "watch")),
    (("discovery.k8s.io",), ("endpointslices",), ("get", "list", "watch")),
    (("",), ("pods",), ("get", "list", "watch")),
    (("events.k8s.io",), ("events",), ("create", "patch")),
    (("authentication.k8s.io",), ("tokenreviews",), ("create",)),
])
# With gatewayAPI.enabled (the default): routes whose parentRefs are Services.
GATEWAY_API_RULES = [
    (("gateway.networking.k8s.io",), ("grpcroutes", "httproutes"), ("get", "list", "watch")),
    (("gateway.networking.k8s.io",), ("grpcroutes/status", "httproutes/status"), ("patch",)),
    (("gateway.networking.x-k8s.io",), ("xbackendtrafficpolicies",), ("get", "list", "watch")),
]


def rules_of(role):
    out = []
    for r in role.get("rules", []):
        check(not r.get("resourceNames") and not r.get("nonResourceURLs"),
              "%s: unexpected resourceNames/nonResourceURLs" % kn(role))
        out.append((tuple(sorted(r["apiGroups"])), tuple(sorted(r["resources"])),
                    tuple(sorted(r["verbs"]))))
    return sorted(out)


def image(img, app_version):
    if img.get("digest"):
        return "%s@%s" % (img["repository"], img["digest"])
    return "%s:%s" % (img["repository"], img.get("tag") or app_version)


def check_chart(docs, values, chart, release, ns):
    app_version = str(chart["appVersion"])
    by_kind = {}
    for obj in docs:
        by_kind.setdefault(obj["kind"], []).append(obj)

    def one(kind, name=None):
        objs = [o for o in by_kind.get(kind, []) if name is None or o["metadata"]["name"] == name]
        check(len(objs) == 1, "want exactly one %s%s, found %d"
              % (kind, " " + name if name else "", len(objs)))
        return objs[0] if objs else None

    full = values.get("fullnameOverride") or (
        release if "outrigger" in release else "%s-outrigger" % release)
    op_name = full + "-operator"
    domain = values["clusterDomain"]
    op = values["operator"]
    inj = values["injector"]
    mon = values["monitoring"]

    # Labels and namespaces on everything the chart renders (the CRD is a
    # copy of the generated file and carries none).
    for obj in docs:
        if obj["kind"] == "CustomResourceDefinition":
            continue
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        missing = LABEL_KEYS - set(labels)
        check(not missing, "%s: missing labels %s" % (kn(obj), sorted(missing)))
        check(labels.get("app.kubernetes.io/part-of") == "outrigger", "%s: part-of" % kn(obj))
        check(labels.get("app.kubernetes.io/instance") == release, "%s: instance label" % kn(obj))
        for k, v in (values.get("commonLabels") or {}).items():
            check(labels.get(k) == v, "%s: commonLabels %s missing" % (kn(obj), k))
        check(len(meta["name"]) <= 63, "%s: name longer than 63" % kn(obj))
        cluster_scoped = obj["kind"] in ("ClusterRole", "ClusterRoleBinding",
                                         "MutatingWebhookConfiguration")
        if cluster_scoped:
            check("namespace" not in meta, "%s: cluster-scoped with a namespace" % kn(obj))
        elif not (obj["kind"] == "ConfigMap" and mon["dashboard"]["namespace"]):
            check(meta.get("namespace") == ns, "%s: namespace %r, want %r"
                  % (kn(obj), meta.get("namespace"), ns))

    # ---- CRD (rendered with --include-crds): the repository's file.
    crd = one("CustomResourceDefinition", "resiliencepolicies.outrigger.dev")

    # ---- Deployment
    dep = one("Deployment", op_name)
    pod = dep["spec"]["template"]["spec"] if dep else {}
    if dep:
        check(dep["spec"]["replicas"] == op["replicas"], "Deployment replicas")
        sel = dep["spec"]["selector"]["matchLabels"]
        check(sel == {"app.kubernetes.io/name": "outrigger", "app.kubernetes.io/instance": release,
                      "app.kubernetes.io/component": "operator"}, "Deployment selector %s" % sel)
        tmpl_labels = dep["spec"]["template"]["metadata"]["labels"]
        check(all(tmpl_labels.get(k) == v for k, v in sel.items()), "pod labels match the selector")
        check(pod.get("serviceAccountName") == (op["serviceAccount"]["name"] or op_name),
              "serviceAccountName")
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532
              and psc.get("seccompProfile") == {"type": "RuntimeDefault"},
              "pod securityContext %s" % psc)
        containers = pod.get("containers", [])
        check(len(containers) == 1, "one container")
        c = containers[0]
        check(c["image"] == image(op["image"], app_version), "operator image %s" % c["image"])
        policy_svc = full + "-policy"
        args = ["run", "--admin-addr=0.0.0.0:9090", "--policy-addr=0.0.0.0:8090",
                "--tls-cert=/etc/outrigger/policy-tls/tls.crt",
                "--tls-key=/etc/outrigger/policy-tls/tls.key",
                "--lease-namespace=" + ns, "--cluster-domain=" + domain]
        if inj["enabled"]:
            args += ["--webhook-addr=0.0.0.0:8443",
                     "--webhook-tls-cert=/etc/outrigger/webhook-tls/tls.crt",
                     "--webhook-tls-key=/etc/outrigger/webhook-tls/tls.key"]
        args += ["--proxy-image=" + image(values["proxy"]["image"], app_version),
                 "--control-plane-url=https://%s.%s.svc.%s:8090" % (policy_svc, ns, domain),
                 "--control-ca-file=/etc/outrigger/policy-tls/ca.crt"]
        if not inj["nativeSidecar"]:
            args.append("--native-sidecar=false")
        if not values["gatewayAPI"]["enabled"]:
            args.append("--gateway-api=false")
        if op["logFormat"] == "json":
            args.append("--log-json")
        args += op.get("extraArgs", [])
        check(c.get("args") == args, "operator args:\n    got  %s\n    want %s" % (c.get("args"), args))
        env = {e["name"]: e for e in c.get("env", [])}
        check(env.get("POD_NAME", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}},
              "POD_NAME from the downward API")
        check(env.get("POD_NAMESPACE", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.namespace"}},
              "POD_NAMESPACE from the downward API")
        pr = values["proxy"]["resources"]
        want_env = {"OUTRIGGER_LOG": op["logLevel"], "OUTRIGGER_PROXY_LOG_LEVEL": values["proxy"]["logLevel"]}
        for key, env_name in (("requests", "CPU_REQUEST"), ("limits", "CPU_LIMIT")):
            if pr.get(key, {}).get("cpu"):
                want_env["OUTRIGGER_PROXY_" + env_name] = str(pr[key]["cpu"])
        for key, env_name in (("requests", "MEMORY_REQUEST"), ("limits", "MEMORY_LIMIT")):
            if pr.get(key, {}).get("memory"):
                want_env["OUTRIGGER_PROXY_" + env_name] = str(pr[key]["memory"])
        for k, v in want_env.items():
            check(env.get(k, {}).get("value") == v, "env %s=%r, want %r" % (k, env.get(k, {}).get("value"), v))
        check(not [k for k in env if k.startswith("OUTRIGGER_PROXY_") and k not in want_env],
              "unexpected proxy env %s" % sorted(env))
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        want_ports = {"admin": 9090, "policy": 8090}
        if inj["enabled"]:
            want_ports["webhook"] = 8443
        check(ports == want_ports, "container ports %s" % ports)
        check(c.get("readinessProbe", {}).get("httpGet") == {"path": "/ready", "port": "admin"}, "readiness /ready")
        check(c.get("livenessProbe", {}).get("httpGet") == {"path": "/live", "port": "admin"}, "liveness /live")
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
              and sc.get("capabilities") == {"drop": ["ALL"]} and sc.get("runAsNonRoot") is True
              and sc.get("runAsUser") == 65532 and sc.get("seccompProfile") == {"type": "RuntimeDefault"},
              "container securityContext %s" % sc)
        check(c.get("resources") == op["resources"], "operator resources")
        vols = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", [])}
        want_vols = {"policy-tls": op_policy_secret(values, full)}
        if inj["enabled"]:
            want_vols["webhook-tls"] = webhook_secret(values, full)
        check(vols == want_vols, "volumes %s, want %s" % (vols, want_vols))
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        check(mounts == {k: "/etc/outrigger/" + k for k in want_vols}, "volumeMounts %s" % mounts)
        # Scheduling.
        aff = pod.get("affinity")
        kind = op["podAntiAffinity"]["type"]
        if op.get("affinity"):
            check(aff == op["affinity"], "affinity override")
        elif kind == "preferred":
            terms = (aff or {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
            check(len(terms) == 1 and terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
                  and terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == sel,
                  "preferred anti-affinity by hostname: %s" % aff)
        elif kind == "required":
            terms = (aff or {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
            check(len(terms) == 1 and terms[0]["labelSelector"]["matchLabels"] == sel, "required anti-affinity")
            check(dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0},
                  "required anti-affinity rolls one at a time")
        else:
            check(aff is None, "no affinity with podAntiAffinity none")
        for want, got in zip(op["topologySpreadConstraints"], pod.get("topologySpreadConstraints", [])):
            check(got.get("labelSelector", {}).get("matchLabels") == sel or "labelSelector" in want,
                  "topologySpreadConstraints get the selector")
        check(len(op["topologySpreadConstraints"]) == len(pod.get("topologySpreadConstraints", [])),
              "topologySpreadConstraints count")
        check(pod.get("nodeSelector", {}) == op["nodeSelector"], "nodeSelector")
        check(pod.get("tolerations", []) == op["tolerations"], "tolerations")

    # ---- PDB
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if op["podDisruptionBudget"]["enabled"] and op["replicas"] > 1:
        if check(len(pdbs) == 1, "PDB expected with %d replicas" % op["replicas"]):
            check(pdbs[0]["spec"]["minAvailable"] == op["podDisruptionBudget"]["minAvailable"], "PDB minAvailable")
            check(pdbs[0]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
                  "PDB selects the operator")
    else:
        check(not pdbs, "no PDB with %d replica(s)" % op["replicas"])

    # ---- RBAC
    sa_name = op["serviceAccount"]["name"] or op_name
    sas = by_kind.get("ServiceAccount", [])
    check(len(sas) == (1 if op["serviceAccount"]["create"] else 0), "ServiceAccount count")
    cr = one("ClusterRole", op_name)
    if cr:
        got = rules_of(cr)
        want = sorted(EXPECTED_CLUSTER_RULES
                      + (GATEWAY_API_RULES if values["gatewayAPI"]["enabled"] else []))
        check(got == want, "ClusterRole rules differ:\n    got  %s\n    want %s" % (got, want))
    role = one("Role", op_name + "-leader")
    if role:
        check(rules_of(role) == [(("coordination.k8s.io",), ("leases",), ("create", "delete", "get", "list", "patch", "update", "watch"))],
              "leader Role rules %s" % rules_of(role))
    for kind, name, ref_kind in (("ClusterRoleBinding", op_name, "ClusterRole"),
                                 ("RoleBinding", op_name + "-leader", "Role")):
        b = one(kind, name)
        if b:
            check(b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": name},
                  "%s roleRef" % kind)
            check(b["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}],
                  "%s subjects %s" % (kind, b["subjects"]))

    # ---- Services
    svcs = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    want_svcs = {full + "-policy": [("policy", 8090, "policy")],
                 full + "-metrics": [("metrics", 9090, "admin")]}
    if inj["enabled"]:
        want_svcs[full + "-webhook"] = [("https", 443, "webhook")]
    check(set(svcs) == set(want_svcs), "Services %s, want %s" % (sorted(svcs), sorted(want_svcs)))
    for name, ports in want_svcs.items():
        if name in svcs:
            got = [(p["name"], p["port"], p["targetPort"]) for p in svcs[name]["spec"]["ports"]]
            check(got == ports, "Service %s ports %s" % (name, got))
            if dep:
                check(svcs[name]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"],
                      "Service %s selects the operator" % name)

    # ---- TLS Secrets
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    want_secrets = {}
    if not values["policyServer"]["tls"]["existingSecret"]:
        want_secrets[full + "-policy-tls"] = (full + "-policy", "policy")
    if inj["enabled"] and not inj["tls"]["existingSecret"]:
        want_secrets[full + "-webhook-tls"] = (full + "-webhook", "webhook")
    check(set(secrets) == set(want_secrets), "Secrets %s, want %s" % (sorted(secrets), sorted(want_secrets)))
    for name, (svc, server) in want_secrets.items():
        if name in secrets:
            check(secrets[name].get("type") == "kubernetes.io/tls", "%s type" % name)
            check_certificate(server, secrets[name], svc, ns, domain)
    if dep and want_secrets:
        crts = [secrets[n]["data"]["tls.crt"] for n in sorted(want_secrets, key=lambda n: n.endswith("webhook-tls"))
                if n in secrets]
        want_sum = hashlib.sha256(",".join(crts).encode()).hexdigest()
        check(dep["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/tls") == want_sum,
              "checksum/tls on the pod template is not the sha256 of the rendered certificates "
              "(the TLS memo was not shared between templates)")

    # ---- Webhook
    hooks = by_kind.get("MutatingWebhookConfiguration", [])
    if not inj["enabled"]:
        check(not hooks, "no webhook when injector.enabled=false")
    elif check(len(hooks) == 1 and hooks[0]["metadata"]["name"] == "outrigger-sidecar-injector",
               "one MutatingWebhookConfiguration outrigger-sidecar-injector"):
        mwc = hooks[0]
        entries = mwc["webhooks"]
        check(len(entries) == (2 if inj["objectSelector"] else 1), "webhook entries: %d" % len(entries))
        excluded = [ns] + [n for n in inj["excludedNamespaces"] if n != ns]
        if inj["tls"]["existingSecret"]:
            if inj["tls"]["caBundle"]:
                want_ca = base64.b64encode(inj["tls"]["caBundle"].encode()).decode()
            else:
                want_ca = None  # cert-manager injects it
        else:
            want_ca = secrets.get(full + "-webhook-tls", {}).get("data", {}).get("ca.crt")
        for w in entries:
            cc = w["clientConfig"]
            check(cc["service"] == {"name": full + "-webhook", "namespace": ns, "path": "/inject", "port": 443},
                  "webhook service %s" % cc["service"])
            check(cc.get("caBundle") == want_ca, "webhook %s caBundle is not the webhook CA" % w["name"])
            check(w["failurePolicy"] == inj["failurePolicy"], "failurePolicy")
            check(w["sideEffects"] == "None" and w["admissionReviewVersions"] == ["v1"]
                  and w["timeoutSeconds"] == inj["timeoutSeconds"] and w["reinvocationPolicy"] == "IfNeeded",
                  "webhook %s settings" % w["name"])
            check(w["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                  "resources": ["pods"], "scope": "Namespaced"}], "webhook rules")
            exprs = w["namespaceSelector"]["matchExpressions"]
            check({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded} in exprs,
                  "webhook %s must exclude %s: %s" % (w["name"], excluded, exprs))
        ns_entry = entries[0]
        check({"key": "outrigger.dev/inject", "operator": "In", "values": ["enabled"]}
              in ns_entry["namespaceSelector"]["matchExpressions"], "namespace opt-in selector")
        if inj["objectSelector"] and len(entries) == 2:
            check(entries[1]["objectSelector"] == {"matchLabels": {"outrigger.dev/inject": "enabled"}},
                  "pod opt-in objectSelector")
            check({"key": "outrigger.dev/inject", "operator": "DoesNotExist"}
                  in entries[1]["namespaceSelector"]["matchExpressions"],
                  "pod opt-in only in namespaces without the label")
        check((mwc["metadata"].get("annotations") or {}) == inj["webhookAnnotations"], "webhook annotations")

    # ---- Monitoring
    def monitor_objs(kind, enabled):
        objs = by_kind.get(kind, [])
        check(len(objs) == (1 if enabled else 0), "%s: %d rendered, enabled=%s" % (kind, len(objs), enabled))
        for o in objs:
            for k, v in mon["labels"].items():
                check(o["metadata"]["labels"].get(k) == v, "%s: monitoring label %s" % (kn(o), k))
        return objs[0] if objs else None

    sm = monitor_objs("ServiceMonitor", mon["serviceMonitor"]["enabled"])
    if sm:
        metrics_svc = svcs.get(full + "-metrics")
        if metrics_svc:
            labels = metrics_svc["metadata"]["labels"]
            check(all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
                  "ServiceMonitor selects the metrics Service")
            check(sm["spec"]["selector"]["matchLabels"] != dep["spec"]["template"]["metadata"]["labels"],
                  "ServiceMonitor selector is specific")
            others = [n for n, s in svcs.items() if n != full + "-metrics" and all(
                s["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())]
            check(not others, "ServiceMonitor also selects %s" % others)
        check([e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"], "ServiceMonitor port metrics")
        check(sm["spec"]["namespaceSelector"] == {"matchNames": [ns]}, "ServiceMonitor namespace")
    pm = monitor_objs("PodMonitor", mon["podMonitor"]["enabled"])
    if pm:
        ep = pm["spec"]["podMetricsEndpoints"]
        check([(e["port"], e["path"]) for e in ep] == [("outrigger-admin", "/metrics")],
              "PodMonitor scrapes outrigger-admin /metrics")
        want_nss = mon["podMonitor"]["namespaces"]
        check(pm["spec"]["namespaceSelector"] == ({"matchNames": want_nss} if want_nss else {"any": True}),
              "PodMonitor namespaces")
    rule = monitor_objs("PrometheusRule", mon["prometheusRule"]["enabled"])
    if rule:
        alerts = {}
        for g in rule["spec"]["groups"]:
            for r in g["rules"]:
                alerts[r["alert"]] = r
                parse_promql(r["expr"], "alert " + r["alert"])
                check(re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(r.get("for", "0s"))) is not None,
                      "alert %s: for" % r["alert"])
                check("severity" in r.get("labels", {}), "alert %s: severity" % r["alert"])
                for k, v in mon["prometheusRule"]["alertLabels"].items():
                    check(r["labels"].get(k) == v, "alert %s: alertLabels" % r["alert"])
                check(r.get("annotations", {}).get("summary") and r["annotations"].get("description"),
                      "alert %s: summary and description" % r["alert"])
        want = {
            "OutriggerCircuitBreakerOpen": ("outrigger_circuit_state", "== 1"),
            "OutriggerRetryBudgetExhausted": ("rate(outrigger_retry_budget_exhausted_total[5m])", "> 0"),
            "OutriggerProxyDisconnected": ("outrigger_control_streams_connected", "== 0"),
            "OutriggerOperatorReconcileErrors": ("increase(outrigger_operator_reconcile_errors_total", "> 0"),
        }
        for name, fragments in want.items():
            if check(name in alerts, "alert %s missing" % name):
                for frag in fragments:
                    check(frag in alerts[name]["expr"], "alert %s: %r not in its expr" % (name, frag))
        check(alerts.get("OutriggerCircuitBreakerOpen", {}).get("for") == mon["prometheusRule"]["circuitOpenFor"],
              "breaker alert for")
        check(("OutriggerOperatorDown" in alerts) == mon["serviceMonitor"]["enabled"],
              "OutriggerOperatorDown only with the ServiceMonitor (absent() would always fire)")
    cms = [o for o in by_kind.get("ConfigMap", []) if o["metadata"]["name"] == full + "-dashboard"]
    check(len(cms) == (1 if mon["dashboard"]["enabled"] else 0), "dashboard ConfigMap count")
    for cm in cms:
        check(cm["metadata"]["namespace"] == (mon["dashboard"]["namespace"] or ns), "dashboard namespace")
        check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard label grafana_dashboard=1")
        dash = json.loads(cm["data"]["outrigger.json"])
        exprs = []
        for p in dash["panels"]:
            for t in p.get("targets", []):
                exprs.append((p["title"], t["expr"]))
        for title, e in exprs:
            parse_promql(grafana_to_promql(e), "dashboard panel %r" % title)
        for v in dash["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v.get("definition", ""))
            if m:
                parse_promql(grafana_to_promql(m.group(1)), "dashboard variable %s" % v["name"])
        text = " ".join(e for _, e in exprs)
        for metric in ("outrigger_requests_total", "outrigger_request_duration_seconds_bucket",
                       "outrigger_retries_total", "outrigger_circuit_state", "outrigger_ejections_total",
                       "outrigger_shed_requests_total", "outrigger_rate_limited_total"):
            check(metric in text, "dashboard has no panel on %s" % metric)
        check("histogram_quantile(0.99" in text, "dashboard p99 latency")
        ids = [p["id"] for p in dash["panels"]]
        check(len(ids) == len(set(ids)), "dashboard panel ids unique")
    return crd


def check_documented_defaults(values, chart):
    """The defaults the chart README and NOTES describe."""
    want = {
        ("operator", "replicas"): 2,
        ("operator", "podAntiAffinity", "type"): "preferred",
        ("operator", "podDisruptionBudget", "minAvailable"): 1,
        ("injector", "enabled"): True,
        ("injector", "failurePolicy"): "Ignore",
        ("injector", "timeoutSeconds"): 5,
        ("injector", "nativeSidecar"): True,
        ("injector", "objectSelector"): False,
        ("proxy", "resources"): {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        ("clusterDomain",): "cluster.local",
        ("gatewayAPI", "enabled"): True,
        ("monitoring", "serviceMonitor", "enabled"): False,
        ("monitoring", "podMonitor", "enabled"): False,
        ("monitoring", "prometheusRule", "enabled"): False,
        ("monitoring", "dashboard", "enabled"): False,
    }
    for path, value in want.items():
        got = values
        for key in path:
            got = got.get(key) if isinstance(got, dict) else None
        check(got == value, "default %s = %r, documented %r" % (".".join(path), got, value))
    check((chart["apiVersion"], chart["name"], chart["version"], str(chart["appVersion"]), chart["kubeVersion"])
          == ("v2", "outrigger", "0.1.0", "0.1.0", ">=1.29.0-0"), "Chart.yaml metadata")


def op_policy_secret(values, full):
    return values["policyServer"]["tls"]["existingSecret"] or full + "-policy-tls"


def webhook_secret(values, full):
    return values["injector"]["tls"]["existingSecret"] or full + "-webhook-tls"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chart", required=True)
    ap.add_argument("--rendered", required=True)
    ap.add_argument("--values", action="append", default=[])
    ap.add_argument("--release", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--k8s-version", action="append", required=True)
    ap.add_argument("--repo-crd", required=True)
    args = ap.parse_args()

    with open(os.path.join(args.chart, "values.yaml")) as f:
        values = yaml.safe_load(f)
    for path in args.values:
        with open(path) as f:
            values = deep_merge(values, yaml.safe_load(f) or {})
    with open(os.path.join(args.chart, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    check(docs, "nothing rendered")

    if not args.values:
        check_documented_defaults(values, chart)
    skipped = validate_schemas(docs, args.k8s_version)
    crd = check_chart(docs, values, chart, args.release, args.namespace)
    if crd:
        with open(args.repo_crd) as f:
            check(crd == yaml.safe_load(f), "rendered CRD differs from %s" % args.repo_crd)

    kinds = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    summary = ", ".join("%s %d" % kv_ for kv_ in sorted(kinds.items()))
    if failures:
        for f_ in failures:
            print("  FAIL " + f_)
        print("  %d failure(s) in %d objects (%s)" % (len(failures), len(docs), summary))
        return 1
    print("  ok: %d objects (%s); k8s schemas %s (strict)%s"
          % (len(docs), summary, " ".join(args.k8s_version),
             "; schema skipped (not built-in): " + ", ".join(skipped) if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
