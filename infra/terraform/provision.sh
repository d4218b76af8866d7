#!/usr/bin/env bash
# Provision fedstream's topics, principals and ACLs on the local secured broker
# (infra/local/kafka.sh) with Terraform: the root module infra/terraform/local.
#
#   provision.sh apply     create or update everything (idempotent); write client configs
#   provision.sh plan      plan -detailed-exitcode: exit 0 no changes, 2 changes pending, 1 error
#   provision.sh destroy   remove the topics, users and ACLs it created
#   provision.sh output    the root module's outputs (names, principals, ACLs; no secret)
#
# Reads the broker's credentials folder, $FEDSTREAM_KAFKA_DIR/credentials (kafka.sh):
#   ca.pem, admin.password            written by kafka.sh
#   <role>.password                   one per role (job, device, owner, auditor): generated
#                                     here when missing (openssl rand, 0600), kept across
#                                     destroy so that a re-apply gives clients the same ones
#   <role>.properties                 written by apply: Java client config (0600, holds the
#                                     password, like kafka.sh's admin.properties)
#   <role>.env                        written by apply: `export` lines for
#                                     fedstream.edge.security.KafkaSecurity.from_env (paths
#                                     only, no secret)
# Secrets reach Terraform only as TF_VAR_* environment variables, never as arguments; the
# passwords are write-only arguments, so neither plans nor state hold them.
#
# Configuration (environment, with defaults):
#   FEDSTREAM_KAFKA_DIR, FEDSTREAM_KAFKA_PORT   as for kafka.sh (infra/local/.run/kafka, 9092)
#   FEDSTREAM_TF_STATE_DIR   $FEDSTREAM_KAFKA_DIR/terraform: state, provider data, a copy of
#                            the configuration (beside the broker data it describes; never
#                            in the repository)
#   FEDSTREAM_TF_CACHE, FEDSTREAM_TERRAFORM      see tools.sh
#   FEDSTREAM_TF_ATTEMPTS    3: how often apply/plan/destroy run when they fail on a
#                            transient broker error (below); 1 turns the retry off
#   TF_VAR_<name>            any other variable of infra/terraform/local, e.g.
#                            TF_VAR_updates_partitions=4
#
# Transient broker errors: the kafka provider's client (IBM/sarama) can lose a race when
# Terraform creates resources in parallel. Broker.Open marks the connection "opened" before
# it takes the connection lock, so a request that slips in between fails with "kafka: broker
# not connected" although the broker is healthy. Terraform's state records what was done,
# so running the same command again finishes the job. provision.sh does that, up to
# FEDSTREAM_TF_ATTEMPTS times, for that message and for "run out of available brokers" (a
# broker restarting under us) only; any other error fails at once.
set -euo pipefail
umask 077

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KAFKA_DIR="${FEDSTREAM_KAFKA_DIR:-$REPO/infra/local/.run/kafka}"
PORT="${FEDSTREAM_KAFKA_PORT:-9092}"
CRED="$KAFKA_DIR/credentials"
WORK="${FEDSTREAM_TF_STATE_DIR:-$KAFKA_DIR/terraform}"
ROLES=(job device owner auditor)

say() { echo "provision: $*"; }
die() { echo "provision: $*" >&2; exit 1; }

[[ "$PORT" =~ ^[0-9]+$ ]] || die "FEDSTREAM_KAFKA_PORT must be a number"

need_broker() {
  [[ -s "$CRED/ca.pem" && -s "$CRED/admin.password" ]] \
    || die "no broker credentials in $CRED (ca.pem, admin.password): start the secured stack first (make stack-up, or infra/local/kafka.sh start with the same FEDSTREAM_KAFKA_DIR)"
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null \
    || die "no broker answers on 127.0.0.1:$PORT: start it first (make stack-up, or infra/local/kafka.sh start)"
}

nodes() {  # node count of the cluster kafka.sh created (cluster.env), 1 if it does not say
  local n=""
  [[ -f "$KAFKA_DIR/cluster.env" ]] && n="$(sed -n 's/^nodes=//p' "$KAFKA_DIR/cluster.env")"
  [[ "$n" =~ ^[0-9]+$ ]] && echo "$n" || echo 1
}

bootstrap_hcl() {  # ["127.0.0.1:9092","127.0.0.1:9094",...]: kafka.sh's node N is PORT+2(N-1)
  local i out=""
  for ((i = 1; i <= $(nodes); i++)); do out+="${out:+,}\"127.0.0.1:$((PORT + 2 * (i - 1)))\""; done
  echo "[$out]"
}

ensure_passwords() {
  local role made=()
  for role in "${ROLES[@]}"; do
    if [[ ! -s "$CRED/$role.password" ]]; then
      openssl rand -hex 24 >"$CRED/.$role.password.tmp"
      chmod 600 "$CRED/.$role.password.tmp"
      mv -f "$CRED/.$role.password.tmp" "$CRED/$role.password"
      made+=("$role")
    fi
  done
  if ((${#made[@]})); then
    say "generated passwords for ${made[*]} in $CRED/<role>.password (0600)"
  fi
}

export_secrets() {  # to Terraform's environment only
  export TF_VAR_admin_password TF_VAR_ca_cert_file TF_VAR_bootstrap_servers
  TF_VAR_admin_password="$(<"$CRED/admin.password")"
  TF_VAR_ca_cert_file="$CRED/ca.pem"
  TF_VAR_bootstrap_servers="$(bootstrap_hcl)"
  local role n
  for role in "${ROLES[@]}"; do
    export "TF_VAR_${role}_password=$(<"$CRED/$role.password")"
  done
  # a cluster of N nodes: every topic on min(N, 3) of them, acks=all needs 2 when N > 1
  n="$(nodes)"
  export TF_VAR_broker_count="${TF_VAR_broker_count:-$n}"
  export TF_VAR_replication_factor="${TF_VAR_replication_factor:-$((n < 3 ? n : 3))}"
  export TF_VAR_min_insync_replicas="${TF_VAR_min_insync_replicas:-$((n > 1 ? 2 : 1))}"
}

write_client_configs() {
  local role pw
  for role in "${ROLES[@]}"; do
    pw="$(<"$CRED/$role.password")"
    rm -f "$CRED/$role.properties"
    cat >"$CRED/$role.properties" <<PROPS
# generated by infra/terraform/provision.sh: the $role principal's Java client config (0600)
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$role" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$CRED/ca.pem
PROPS
    cat >"$CRED/$role.env" <<ENV
# generated by infra/terraform/provision.sh: connect as $role (no secret here; the password
# is read from the file). Use: set -a; . $CRED/$role.env; set +a
export FEDSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL
export FEDSTREAM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export FEDSTREAM_KAFKA_USERNAME=$role
export FEDSTREAM_KAFKA_PASSWORD_FILE=$CRED/$role.password
export FEDSTREAM_KAFKA_CA_FILE=$CRED/ca.pem
export FEDSTREAM_KAFKA_BOOTSTRAP=$(bootstrap_hcl | tr -d '[]"')
ENV
  done
  say "client configs: $CRED/<role>.properties (Java, 0600) and <role>.env (KafkaSecurity.from_env)"
}

tools() {
  local line
  while IFS= read -r line; do
    case "$line" in
      FEDSTREAM_TF=*) TF="${line#FEDSTREAM_TF=}" ;;
      TF_CLI_CONFIG_FILE=*) export TF_CLI_CONFIG_FILE="${line#TF_CLI_CONFIG_FILE=}" ;;
    esac
  done < <("$HERE/tools.sh" ensure)
  [[ -n "${TF:-}" ]] || die "infra/terraform/tools.sh found no terraform"
}

init() {
  mkdir -p "$WORK"
  chmod 700 "$WORK"
  # a fresh copy of the configuration: Terraform writes its lock file beside the root
  # module, and nothing of a run may land in the repository
  rm -rf "$WORK/config"
  mkdir -p "$WORK/config"
  cp -R "$HERE/modules" "$HERE/local" "$WORK/config/"
  export TF_DATA_DIR="$WORK/.terraform" TF_IN_AUTOMATION=1 TF_INPUT=0
  if ! "$TF" -chdir="$WORK/config/local" init -input=false -no-color \
    -backend-config="path=$WORK/terraform.tfstate" >"$WORK/init.log" 2>&1; then
    cat "$WORK/init.log" >&2
    die "terraform init failed (log: $WORK/init.log)"
  fi
}

tf() { "$TF" -chdir="$WORK/config/local" "$@"; }

TRANSIENT='kafka: broker not connected|client has run out of available brokers'

tf_retrying() {  # tf "$@", run again (see "Transient broker errors") while it may help
  local attempts="${FEDSTREAM_TF_ATTEMPTS:-3}" attempt=1 rc log="$WORK/last-command.log"
  [[ "$attempts" =~ ^[1-9][0-9]*$ ]] || die "FEDSTREAM_TF_ATTEMPTS must be a positive number"
  while :; do
    rc=0
    tf "$@" 2>&1 | tee "$log" || rc="${PIPESTATUS[0]}"
    if ((rc != 1 || attempt >= attempts)) || ! grep -Eq "$TRANSIENT" "$log"; then
      return "$rc"
    fi
    attempt=$((attempt + 1))
    say "transient broker error (the provider lost its connection race); running $1 again, attempt $attempt of $attempts"
    sleep 2
  done
}

cmd="${1:-}"
case "$cmd" in
  apply | plan | destroy | output) ;;
  *) echo "usage: $0 apply|plan|destroy|output" >&2; exit 2 ;;
esac

tools
if [[ "$cmd" == output ]]; then
  [[ -s "$WORK/terraform.tfstate" ]] || die "nothing provisioned yet (no state in $WORK)"
  init
  tf output -no-color
  exit 0
fi
need_broker
ensure_passwords
export_secrets
init
bootstrap="$(bootstrap_hcl | tr -d '[]"')"
case "$cmd" in
  apply)
    say "applying infra/terraform/local to $bootstrap as admin ($(basename "$TF"); state: $WORK/terraform.tfstate)"
    start=$SECONDS
    tf_retrying apply -auto-approve -input=false -no-color -compact-warnings
    write_client_configs
    say "applied in $((SECONDS - start)) s: topics, users $(printf '%s ' "${ROLES[@]}")and their ACLs at $bootstrap"
    ;;
  plan)
    rc=0
    tf_retrying plan -detailed-exitcode -input=false -no-color -compact-warnings || rc=$?
    case "$rc" in
      0) say "no changes: $bootstrap matches infra/terraform/local" ;;
      2) say "changes pending at $bootstrap (run: provision.sh apply)" ;;
      *) say "plan failed (exit $rc)" ;;
    esac
    exit "$rc"
    ;;
  destroy)
    say "destroying what infra/terraform/local created at $bootstrap (state: $WORK/terraform.tfstate)"
    start=$SECONDS
    tf_retrying destroy -auto-approve -input=false -no-color -compact-warnings
    say "destroyed in $((SECONDS - start)) s; the password files stay in $CRED for a later apply"
    ;;
esac
