# Debian packages the build, the tests, the demo and the benchmarks need. Source this file.
CC_PACKAGES=(
    build-essential cmake pkg-config openssl libssl-dev
    postgresql-15 postgresql-server-dev-15
    googletest libgtest-dev libbenchmark-dev nlohmann-json3-dev
    clang libclang-rt-14-dev
    python3-cryptography python3-psycopg2 python3-pytest python3-pykmip
)

install_deps() {
    local missing=()
    for p in "${CC_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then echo "run as root to install packages" >&2; return 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
