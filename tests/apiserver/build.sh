#!/usr/bin/env bash
# Build (or reuse) the test-only Kubernetes API server `outrigger-apiserver`.
#
# Everything comes from Debian unstable (sid) packages, fetched with a private
# apt configuration and unpacked with `dpkg-deb -x` into a private root; nothing
# is installed system-wide. The Go wrapper in ./wrapper is compiled in GOPATH
# mode against the packaged Go sources under <root>/usr/share/gocode.
#
# The binary is cached under $CACHE/bin/<hash>/ keyed by the wrapper sources
# and the exact package versions, so a second run is instant.
#
# Environment:
#   OUTRIGGER_CACHE            cache root (default ~/.cache/outrigger)
#   OUTRIGGER_APISERVER_REFRESH=1  re-run `apt-get update` and re-resolve packages
#   OUTRIGGER_DEBIAN_MIRROR    mirror URI (default: the one in
#                              /etc/apt/sources.list.d/debian.sources, else
#                              http://deb.debian.org/debian)
#
# Last line of stdout: absolute path of the outrigger-apiserver binary.
# All progress messages go to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${OUTRIGGER_CACHE:-$HOME/.cache/outrigger}/apiserver"
APT_DIR="$CACHE/apt"
DEB_DIR="$CACHE/debs"
ROOT="$CACHE/root"
BIN_DIR="$CACHE/bin"
SUITE=sid
ARCH="$(dpkg --print-architecture)"

log() { printf '[apiserver/build] %s\n' "$*" >&2; }

# Roots of the package closure. golang-go pulls golang-1.27-go/-src.
ROOT_PKGS=(golang-k8s-apiextensions-apiserver-dev golang-go etcd-server)

mirror_uri() {
    if [[ -n "${OUTRIGGER_DEBIAN_MIRROR:-}" ]]; then
        echo "$OUTRIGGER_DEBIAN_MIRROR"; return
    fi
    local f=/etc/apt/sources.list.d/debian.sources uri=""
    if [[ -r $f ]]; then
        # First "URIs:" whose value ends in /debian (not debian-security).
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f")"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

APT_OPTS=(
    -o "Dir::State=$APT_DIR/state"
    -o "Dir::State::status=$APT_DIR/state/status"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::Etc::SourceList=$APT_DIR/etc/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=/dev/null"
    -o "APT::Architecture=$ARCH"
    -o "APT::Architectures::=$ARCH"
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
    -o "APT::Sandbox::User=root"
    -o "Debug::NoLocking=1"
    -o "APT::Get::List-Cleanup=false"
)

apt_setup() {
    mkdir -p "$APT_DIR"/state/lists/partial "$APT_DIR"/cache/archives/partial "$APT_DIR"/etc
    touch "$APT_DIR/state/status"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    local want="deb [signed-by=$keyring] $(mirror_uri) $SUITE main"
    if [[ ! -f "$APT_DIR/etc/sources.list" ]] || [[ "$(cat "$APT_DIR/etc/sources.list")" != "$want" ]]; then
        echo "$want" > "$APT_DIR/etc/sources.list"
        rm -f "$APT_DIR/updated"
    fi
    if [[ ! -f "$APT_DIR/updated" || "${OUTRIGGER_APISERVER_REFRESH:-0}" == 1 ]]; then
        log "apt-get update ($SUITE, private config)"
        apt-get "${APT_OPTS[@]}" -q update >&2
        touch "$APT_DIR/updated"
    fi
}

# Print "name version" for the closure of ROOT_PKGS, following dependencies
# only into golang-* packages (the Go sources and the toolchain); etcd-server's
# runtime deps (libc, systemd users) are not needed: etcd is a static Go binary.
resolve_closure() {
    local -A seen=()
    local -a frontier=("${ROOT_PKGS[@]}") next
    local p
    for p in "${frontier[@]}"; do seen[$p]=1; done
    while ((${#frontier[@]})); do
        next=()
        # Parse `apt-cache depends`: for every or-group take the first member;
        # for a virtual package take its first provider.
        while read -r dep; do
            [[ -z $dep || -n ${seen[$dep]:-} ]] && continue
            seen[$dep]=1
            next+=("$dep")
        done < <(apt-cache "${APT_OPTS[@]}" depends --no-recommends --no-suggests \
                    --no-conflicts --no-breaks --no-replaces --no-enhances "${frontier[@]}" |
                 awk '
                    /^[^ ]/ { pkg = $1; skip = 0; pendingvirt = 0; next }
                    /^ [ |](Pre)?Depends:/ {
                        alt = ($0 ~ /^ \|/)
                        name = $2
                        if (!skip) {
                            if (name ~ /^</) { pendingvirt = 1 }
                            else { pendingvirt = 0; if (name ~ /^golang-/) print name }
                        } else { pendingvirt = 0 }
                        # Members after the first of an or-group are skipped.
                        skip = alt
                        next
                    }
                    /^    / { if (pendingvirt) { if ($1 ~ /^golang-/) print $1; pendingvirt = 0 } next }
                 ')
        frontier=("${next[@]}")
    done
    for p in "${!seen[@]}"; do echo "$p"; done | sort |
        xargs apt-cache "${APT_OPTS[@]}" show --no-all-versions |
        awk '/^Package:/ { p = $2 } /^Version:/ { print p, $2 }'
}

fetch_and_extract() {
    local pkglist="$CACHE/packages.txt"
    # A change of ROOT_PKGS re-resolves the closure (roots.txt records the
    # roots of the cached one; a cache from before it is taken as current).
    local roots="${ROOT_PKGS[*]}" recorded
    recorded="$(cat "$CACHE/roots.txt" 2>/dev/null || echo "$roots")"
    if [[ ! -s $pkglist || ! -f "$ROOT/.complete" || "${OUTRIGGER_APISERVER_REFRESH:-0}" == 1 ||
          $recorded != "$roots" ]]; then
        apt_setup
        log "resolving package closure"
        resolve_closure > "$pkglist.tmp"
        mv "$pkglist.tmp" "$pkglist"
        log "$(wc -l < "$pkglist") packages in closure"
        mkdir -p "$DEB_DIR"
        local missing=() name ver
        while read -r name ver; do
            # apt-get download names files NAME_VERSION_ARCH.deb with ':' as %3a.
            if ! compgen -G "$DEB_DIR/${name}_${ver//:/%3a}_*.deb" > /dev/null; then
                missing+=("$name=$ver")
            fi
        done < "$pkglist"
        if ((${#missing[@]})); then
            log "downloading ${#missing[@]} .deb files"
            (cd "$DEB_DIR" && apt-get "${APT_OPTS[@]}" -q download "${missing[@]}" >&2)
        fi
        # (Re)extract into a fresh root so stale files from older versions never linger.
        log "extracting into $ROOT"
        rm -rf "$ROOT.new"
        mkdir -p "$ROOT.new"
        while read -r name ver; do
            local deb
            deb="$(compgen -G "$DEB_DIR/${name}_${ver//:/%3a}_*.deb" | head -n1)"
            dpkg-deb -x "$deb" "$ROOT.new"
        done < "$pkglist"
        touch "$ROOT.new/.complete"
        rm -rf "$ROOT"
        mv "$ROOT.new" "$ROOT"
    fi
    echo "$roots" > "$CACHE/roots.txt"
}

find_goroot() {
    local d
    for d in "$ROOT"/usr/lib/go-*; do
        [[ -x $d/bin/go ]] && { echo "$d"; return; }
    done
    echo "no Go toolchain found under $ROOT/usr/lib" >&2
    return 1
}

# /version reports the Kubernetes version matching the packaged libraries
# (k8s.io/* 0.X.Y is Kubernetes 1.X.Y), so clients that parse it are happy.
version_ldflags() {
    local v major minor patch pkg=k8s.io/component-base/version
    v="$(awk '$1 == "golang-k8s-apiextensions-apiserver-dev" { print $2 }' "$CACHE/packages.txt")"
    v="${v#*:}"; v="${v%%-*}"; v="${v%%+*}"; v="${v%%~*}"
    IFS=. read -r _ minor patch <<< "$v"
    major=1
    echo "-X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitVersion=v$major.$minor.${patch:-0}" \
         "-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
}

build_wrapper() {
    local goroot key out
    goroot="$(find_goroot)"
    key="$( { cat "$CACHE/packages.txt"; find "$HERE/wrapper" -type f -name '*.go' | sort | xargs sha256sum | awk '{print $1}'; } | sha256sum | cut -c1-16)"
    out="$BIN_DIR/$key/outrigger-apiserver"
    if [[ -x $out ]]; then
        echo "$out"; return
    fi
    log "compiling wrapper (GOPATH mode, $(basename "$goroot")); this takes a few minutes cold"
    local gopath="$CACHE/gopath"
    # GOPATH: the packaged sources, plus a private tree holding the wrapper.
    rm -rf "$gopath"
    mkdir -p "$gopath/src/outrigger.test" "$CACHE/gocache"
    cp -r "$HERE/wrapper" "$gopath/src/outrigger.test/apiserver"
    mkdir -p "$BIN_DIR/$key.tmp"
    (
        cd "$gopath/src/outrigger.test/apiserver"
        export GOROOT="$goroot" PATH="$goroot/bin:$PATH"
        export GO111MODULE=off GOPATH="$gopath:$ROOT/usr/share/gocode"
        export GOCACHE="$CACHE/gocache" GOFLAGS= GOTOOLCHAIN=local GOPROXY=off
        export CGO_ENABLED=0 GOTELEMETRY=off
        go build -trimpath -ldflags "$(version_ldflags)" -o "$BIN_DIR/$key.tmp/outrigger-apiserver" . >&2
    )
    rm -rf "$BIN_DIR/$key"
    mv "$BIN_DIR/$key.tmp" "$BIN_DIR/$key"
    echo "$out"
}

main() {
    # One build at a time per cache (the GOPATH and the package root are
    # rebuilt in place): a second invocation waits, then finds the binary.
    mkdir -p "$CACHE"
    if command -v flock > /dev/null; then
        exec 9> "$CACHE/.lock"
        if ! flock -n 9; then
            log "waiting for another build.sh to finish"
            flock 9
        fi
    fi
    fetch_and_extract
    local bin etcd
    bin="$(build_wrapper)"
    etcd="$ROOT/usr/bin/etcd"
    [[ -x $etcd ]] || { echo "etcd binary missing at $etcd" >&2; exit 1; }
    # Stable names for start.sh.
    ln -sfn "$bin" "$BIN_DIR/outrigger-apiserver"
    ln -sfn "$etcd" "$BIN_DIR/etcd"
    echo "$bin"
}

main "$@"
