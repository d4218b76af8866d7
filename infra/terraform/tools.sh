#!/usr/bin/env bash
# Terraform (or OpenTofu) and the mongey/kafka provider on any machine, without the
# Terraform registry: everything is found on PATH or built once from the Go module proxy
# into a cache OUTSIDE the repository, with a generated CLI configuration that points
# Terraform at a filesystem mirror. The second run is instant.
#
#   tools.sh [ensure]   find or build the tools; print KEY=VALUE lines on stdout:
#                         FEDSTREAM_TF=<terraform or tofu binary>
#                         TF_CLI_CONFIG_FILE=<generated CLI config>
#   tools.sh env        the same as `export` lines:  eval "$(infra/terraform/tools.sh env)"
#   tools.sh clean      remove the cache (the next run builds again)
#
# Configuration (environment, with defaults):
#   FEDSTREAM_TF_CACHE   ${XDG_CACHE_HOME:-$HOME/.cache}/fedstream/terraform
#   FEDSTREAM_TERRAFORM  auto: `terraform` >= 1.11 on PATH, else `tofu` >= 1.11 on PATH, else
#                          the pinned OpenTofu built from source (cached);
#                        opentofu: always the pinned OpenTofu build;
#                        /path/to/binary: that terraform or tofu (>= 1.11)
#
# Why 1.11: the kafka module hands the SCRAM passwords to write-only arguments, which keeps
# them out of plans and state; Terraform and OpenTofu have those since 1.11 (and validations
# that refer to other variables, used for replication factor <= brokers, since 1.9).
#
# Pinned: OpenTofu 1.12.6, github.com/Mongey/terraform-provider-kafka v0.13.1. The builds
# need Go on PATH (>= 1.26.6 for OpenTofu, >= 1.24 for the provider) and use it as is
# (GOTOOLCHAIN=local: no toolchain is downloaded behind your back). Module checksums are
# verified against sum.golang.org through the proxy as usual. Measured on a shared 2-core
# VM: the provider builds in 61-82 s, OpenTofu in 6-7.5 min (only when no terraform >= 1.11
# is on PATH); the Go caches are removed afterwards (the cache keeps 133 MB of binaries).
# Progress goes to stderr.
set -euo pipefail

TOFU_VERSION=1.12.6
PROVIDER_VERSION=0.13.1
MIN_TF_VERSION=1.11.0
GO_MIN_TOFU=1.26.6
GO_MIN_PROVIDER=1.24.0
# OpenTofu's go.mod replaces hashicorp/hcl with its fork, which `go install` refuses;
# a wrapper module carries the same replace directive.
TOFU_HCL_REPLACE='github.com/hashicorp/hcl/v2@v2.20.1=github.com/opentofu/hcl/v2@v2.20.2-0.20251021132045-587d123c2828'
# the provider's dependency tree still names git.apache.org/thrift.git, which is gone
PROVIDER_THRIFT_REPLACE='git.apache.org/thrift.git=github.com/apache/thrift@v0.0.0-20180902110319-2566ecd5d999'

CACHE="${FEDSTREAM_TF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fedstream/terraform}"
CHOICE="${FEDSTREAM_TERRAFORM:-auto}"
MIRROR="$CACHE/mirror"
CLI_CONFIG="$CACHE/cli.tfrc"
TOFU_BIN="$CACHE/opentofu-$TOFU_VERSION/tofu"

say() { echo "terraform-tools: $*" >&2; }
die() { echo "terraform-tools: $*" >&2; exit 1; }

platform() {
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) die "unsupported OS $(uname -s)" ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) die "unsupported CPU $(uname -m)" ;;
  esac
  echo "${os}_${arch}"
}

version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

tf_version() {  # "1.11.4" (no CLI config, so a broken ~/.terraformrc cannot get in the way)
  TF_CLI_CONFIG_FILE=/dev/null "$1" version -json 2>/dev/null \
    | sed -n 's/.*"terraform_version": *"\([0-9][0-9.]*\).*/\1/p' | head -n1
}

usable() {  # usable BINARY: a terraform/tofu >= MIN_TF_VERSION
  local v
  v="$(tf_version "$1")" || return 1
  [[ -n "$v" ]] && version_ge "$v" "$MIN_TF_VERSION"
}

need_go() {  # need_go MIN_VERSION WHAT
  command -v go >/dev/null \
    || die "go not found on PATH; building $2 needs Go >= $1 (https://go.dev/dl/ or your OS packages)"
  local v
  v="$(GOTOOLCHAIN=local go env GOVERSION)"
  v="${v#go}"
  version_ge "$v" "$1" \
    || die "go $v is too old to build $2 (needs >= $1, GOTOOLCHAIN=local); install a newer Go"
}

go_env() {  # a private Go workspace under the cache, so a cold build is really cold
  export GOTOOLCHAIN=local
  export GOPATH="$CACHE/go/path"
  export GOMODCACHE="$CACHE/go/mod"
  export GOCACHE="$CACHE/go/build-cache"
  export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"
  export CGO_ENABLED=0
}

run_with_heartbeat() {  # run_with_heartbeat WHAT LOG CMD...: progress every 60 s, log on failure
  local what="$1" log="$2"
  shift 2
  local start=$SECONDS
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null && say "  ... still $what ($(((SECONDS - start) / 60)) min)"
  done
  if ! wait "$pid"; then
    tail -n 40 "$log" >&2
    die "$what failed after $((SECONDS - start)) s; full log: $log"
  fi
}

build_in_wrapper() {  # build_in_wrapper DIR REPLACE MODULE@VERSION PACKAGE OUTPUT WHAT LDFLAGS
  local dir="$1" replace="$2" module="$3" package="$4" output="$5" what="$6" ldflags="$7"
  rm -rf "$dir"
  mkdir -p "$dir"
  (
    cd "$dir"
    go mod init fedstream.local/terraform-tools-build >/dev/null 2>&1
    go mod edit -replace "$replace"
    run_with_heartbeat "downloading $module" "$dir/get.log" go get "$module"
    run_with_heartbeat "building $what" "$dir/build.log" \
      go build -trimpath -ldflags="$ldflags" -o "$output.partial" "$package"
    mv -f "$output.partial" "$output"
  )
  # the Go module and build caches (several GB for OpenTofu) are not needed to run anything
  chmod -R u+w "$CACHE/go" 2>/dev/null || true
  rm -rf "$dir" "$CACHE/go"
}

ensure_provider() {
  local plat name dest other
  plat="$(platform)"
  name="terraform-provider-kafka_v$PROVIDER_VERSION"
  dest="$MIRROR/registry.terraform.io/mongey/kafka/$PROVIDER_VERSION/$plat"
  other="$MIRROR/registry.opentofu.org/mongey/kafka/$PROVIDER_VERSION/$plat"
  if [[ ! -x "$dest/$name" ]]; then
    need_go "$GO_MIN_PROVIDER" "terraform-provider-kafka"
    go_env
    say "building terraform-provider-kafka v$PROVIDER_VERSION from the Go module proxy (once; 1-1.5 min on 2 cores)"
    local start=$SECONDS
    mkdir -p "$dest"
    build_in_wrapper "$CACHE/build-provider" "$PROVIDER_THRIFT_REPLACE" \
      "github.com/Mongey/terraform-provider-kafka@v$PROVIDER_VERSION" \
      github.com/Mongey/terraform-provider-kafka "$dest/$name" "terraform-provider-kafka" "-s"
    say "built terraform-provider-kafka v$PROVIDER_VERSION in $((SECONDS - start)) s"
  fi
  # the same package for OpenTofu, which looks it up under its own registry host
  if [[ ! -x "$other/$name" ]]; then
    mkdir -p "$other"
    ln -f "$dest/$name" "$other/$name" 2>/dev/null || cp -f "$dest/$name" "$other/$name"
  fi
}

ensure_tofu() {
  if [[ ! -x "$TOFU_BIN" ]]; then
    need_go "$GO_MIN_TOFU" "OpenTofu $TOFU_VERSION"
    go_env
    if [[ "$CHOICE" == auto ]]; then
      say "no terraform or tofu >= $MIN_TF_VERSION on PATH"
    fi
    say "building OpenTofu $TOFU_VERSION from the Go module proxy (once; 6-7 min on 2 cores)"
    local start=$SECONDS
    mkdir -p "$(dirname "$TOFU_BIN")"
    build_in_wrapper "$CACHE/build-tofu" "$TOFU_HCL_REPLACE" \
      "github.com/opentofu/opentofu/cmd/tofu@v$TOFU_VERSION" \
      github.com/opentofu/opentofu/cmd/tofu "$TOFU_BIN" "OpenTofu" \
      "-s -X github.com/opentofu/opentofu/version.dev=no"
    say "built OpenTofu $TOFU_VERSION in $((SECONDS - start)) s"
  fi
  usable "$TOFU_BIN" || die "the built $TOFU_BIN does not run; remove $CACHE and try again"
  echo "$TOFU_BIN"
}

choose_binary() {
  case "$CHOICE" in
    auto)
      local b
      for b in terraform tofu; do
        if command -v "$b" >/dev/null && usable "$(command -v "$b")"; then
          command -v "$b"
          return
        fi
      done
      ensure_tofu
      ;;
    opentofu) ensure_tofu ;;
    *)
      [[ -x "$CHOICE" ]] || die "FEDSTREAM_TERRAFORM=$CHOICE is not an executable"
      usable "$CHOICE" || die "FEDSTREAM_TERRAFORM=$CHOICE is not terraform/tofu >= $MIN_TF_VERSION"
      echo "$CHOICE"
      ;;
  esac
}

write_cli_config() {
  local tmp="$CLI_CONFIG.tmp.$$"
  cat >"$tmp" <<HCL
# generated by infra/terraform/tools.sh: the kafka provider comes from the local mirror,
# every other provider from its registry as usual
disable_checkpoint = true
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["registry.terraform.io/mongey/kafka", "registry.opentofu.org/mongey/kafka"]
  }
  direct {
    exclude = ["registry.terraform.io/mongey/kafka", "registry.opentofu.org/mongey/kafka"]
  }
}
HCL
  mv -f "$tmp" "$CLI_CONFIG"
}

ensure() {
  mkdir -p "$CACHE"
  # one build at a time per cache (make test and make provision may start together)
  exec 9>"$CACHE/.lock"
  flock 9 2>/dev/null || true
  ensure_provider
  local bin
  bin="$(choose_binary)"
  write_cli_config
  say "using $bin ($(tf_version "$bin")), provider mongey/kafka $PROVIDER_VERSION from $MIRROR"
  exec 9>&-
  printf 'FEDSTREAM_TF=%s\nTF_CLI_CONFIG_FILE=%s\n' "$bin" "$CLI_CONFIG"
}

case "${1:-ensure}" in
  ensure) ensure ;;
  env) ensure | sed "s/^\([A-Z_]*\)=\(.*\)$/export \1='\2'/" ;;
  clean)
    [[ -d "$CACHE" ]] && chmod -R u+w "$CACHE" 2>/dev/null
    rm -rf "$CACHE"
    say "removed $CACHE"
    ;;
  *) echo "usage: $0 [ensure|env|clean]" >&2; exit 2 ;;
esac
