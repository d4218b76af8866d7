#!/usr/bin/env bash
# A real, secured Apache Kafka 4.x cluster on loopback, in KRaft combined mode (every node is
# broker + controller), assembled from the Maven artifacts in .lib/kafka (see pom.xml;
# `make jars`). One node by default; FEDSTREAM_KAFKA_NODES=3 starts three.
#
#   kafka.sh start | stop | status | topic NAME [PARTITIONS] [MAX_MESSAGE_BYTES]
#   kafka.sh stop-node N | start-node N      one node of a multi-node cluster (chaos tests)
#   kafka.sh env                             export lines for clients (paths only, no secret)
#
# Configuration (environment, with defaults):
#   FEDSTREAM_KAFKA_PORT             9092   client listener of node 1 (SASL_SSL, 127.0.0.1)
#   FEDSTREAM_KAFKA_CONTROLLER_PORT  9093   KRaft controller listener of node 1
#   FEDSTREAM_KAFKA_NODES            1      1, 3 or 5 nodes (fixed when the cluster is created)
#   FEDSTREAM_KAFKA_DIR              infra/local/.run/kafka   credentials, TLS, data, logs
#   FEDSTREAM_KAFKA_HEAP             1g     per node
#   FEDSTREAM_KAFKA_MAX_MESSAGE_BYTES 16777216  broker-wide message.max.bytes (models are big)
#   FEDSTREAM_KAFKA_START_TIMEOUT    90     seconds to wait for the nodes to answer
#
# Ports: node N (1-based) listens for clients on FEDSTREAM_KAFKA_PORT + 2(N-1) and for the
# controller quorum on FEDSTREAM_KAFKA_CONTROLLER_PORT + 2(N-1): with the defaults node 1 is
# 9092/9093, node 2 9094/9095, node 3 9096/9097. The bootstrap list names every node.
#
# Security (every client must authenticate):
#   * client listener SASL_SSL, SCRAM-SHA-512, TLS from a CA generated on first start
#     (openssl, EC P-256, PEM); the broker certificate names 127.0.0.1 and localhost.
#   * inter-broker traffic uses the same SASL_SSL listener as the admin principal (no
#     unencrypted data path, one port per node fewer); the controller listener stays on
#     loopback with SASL/PLAIN (admin), for the nodes' own use.
#   * StandardAuthorizer, allow.everyone.if.no.acl.found=false, super.users=User:admin. The
#     admin's SCRAM credential is written at storage-format time (StorageTool --add-scram).
#     Other principals (job, device, owner, auditor) and their ACLs are created by the
#     Terraform wrapper, which drops <role>.password files into the credentials folder.
#   * No secret ever appears in a process's arguments: the tools read admin.properties
#     (--command-config), StorageTool reads its --add-scram from a 0600 Java @argfile (the
#     JVM launcher expands it, /proc/PID/cmdline shows only the @path), the broker reads its
#     JAAS lines from server.properties (0600). Passwords are never printed or logged (Kafka
#     logs password-type settings as [hidden]).
#
# Layout of FEDSTREAM_KAFKA_DIR (everything created with umask 077):
#   credentials/ca.pem            trust anchor for clients (0644)
#   credentials/admin.password    admin's SCRAM password (openssl rand; 0600)
#   credentials/admin.properties  Java client config for admin (SASL_SSL, JAAS, PEM truststore)
#   credentials/<role>.password   added by Terraform, not by this script
#   tls/                          CA key, broker key (PKCS#8, encrypted) + cert, key password
#   cluster.env                   cluster id and node count (not secret)
#   node-N/                       server.properties (0600), data/, logs/server.log, kafka.pid
#
# start waits until every node answers an ApiVersions request (authenticated, over TLS; not a
# sleep), is idempotent (a second start reports the running nodes and starts missing ones),
# and refuses clearly when a port is taken by something else. stop sends SIGTERM to every
# node at once (controlled shutdown while the quorum still exists) and is idempotent.
set -euo pipefail
umask 077

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/.lib/kafka"
PORT="${FEDSTREAM_KAFKA_PORT:-9092}"
CPORT="${FEDSTREAM_KAFKA_CONTROLLER_PORT:-9093}"
NODES="${FEDSTREAM_KAFKA_NODES:-1}"
DIR="${FEDSTREAM_KAFKA_DIR:-$HERE/.run/kafka}"
HEAP="${FEDSTREAM_KAFKA_HEAP:-1g}"
MAX_MSG="${FEDSTREAM_KAFKA_MAX_MESSAGE_BYTES:-16777216}"
TIMEOUT="${FEDSTREAM_KAFKA_START_TIMEOUT:-90}"
CRED="$DIR/credentials"
TLS="$DIR/tls"
ADMIN_PROPS="$CRED/admin.properties"
CLUSTER_ENV="$DIR/cluster.env"
STOP_WAIT=60  # seconds a node gets for its controlled shutdown before SIGKILL

die() { echo "kafka: $*" >&2; exit 1; }

check_settings() {
  [[ "$PORT" =~ ^[0-9]+$ && "$CPORT" =~ ^[0-9]+$ ]] \
    || die "FEDSTREAM_KAFKA_PORT and FEDSTREAM_KAFKA_CONTROLLER_PORT must be numbers"
  [[ "$NODES" =~ ^[135]$ ]] || die "FEDSTREAM_KAFKA_NODES must be 1, 3 or 5 (a KRaft quorum), got '$NODES'"
  local count; count="$(cluster_nodes)"
  local -A seen=()
  local i p
  for ((i = 1; i <= count; i++)); do
    for p in "$(client_port "$i")" "$(controller_port "$i")"; do
      [[ -z "${seen[$p]:-}" ]] || die "port $p is used twice (node ports are PORT+2(N-1) and CONTROLLER_PORT+2(N-1)); pick ports further apart"
      seen[$p]=1
    done
  done
}

need_jars() {
  compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null \
    || die "broker jars missing in $LIB; run 'make jars' (resolves them from Maven Central)"
  command -v java >/dev/null || die "java not found on PATH (Kafka 4.x needs Java 17+)"
  command -v openssl >/dev/null || die "openssl not found on PATH (it creates the stack's TLS certificates)"
}

classpath() { printf '%s:' "$LIB"/*.jar; }

kjava() {  # run a Kafka tool class quietly (tools log through log4j2 to stderr otherwise)
  java -Xmx256m -Dlog4j2.level=error -Dlog4j2.rootLogger.level=error \
    -Dlog4j2.configurationFile="$HERE/log4j2-tools.properties" -cp "$(classpath)" "$@"
}

# ---------------------------------------------------------------- nodes and ports
cluster_nodes() {  # the node count the cluster was created with (else the requested one)
  if [[ -f "$CLUSTER_ENV" ]]; then
    sed -n 's/^nodes=//p' "$CLUSTER_ENV"
  else
    echo "$NODES"
  fi
}
node_dir() { echo "$DIR/node-$1"; }
client_port() { echo $((PORT + 2 * ($1 - 1))); }
controller_port() { echo $((CPORT + 2 * ($1 - 1))); }

bootstrap() {  # every node's client listener, comma-separated
  local i out=""
  for ((i = 1; i <= $(cluster_nodes); i++)); do out+="${out:+,}127.0.0.1:$(client_port "$i")"; done
  echo "$out"
}

voters() {
  local i out=""
  for ((i = 1; i <= $(cluster_nodes); i++)); do out+="${out:+,}$i@127.0.0.1:$(controller_port "$i")"; done
  echo "$out"
}

running_pid() {  # pid of node $1 if it runs (and is really that node: pids get reused)
  local pidfile; pidfile="$(node_dir "$1")/kafka.pid"
  [[ -f "$pidfile" ]] || return 1
  local pid; pid="$(<"$pidfile")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(node_dir "$1")/server.properties" \
    || return 1
  echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

answers() {  # true when node $1 answers an ApiVersions request on its client listener
  # The listener accepts connections only once the node is ready; checking the port first
  # spares a JVM start (seconds of CPU on 2 cores, which the starting nodes need) per probe.
  port_in_use "$(client_port "$1")" || return 1
  local out
  out="$(kjava org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "127.0.0.1:$(client_port "$1")" --command-config "$ADMIN_PROPS" 2>/dev/null)" \
    || return 1
  grep "(id: $1 rack" <<<"$out" | grep -qv "isFenced: true"
}

# ---------------------------------------------------------------- credentials and TLS
secret_file() {  # write stdin to $1, readable by the owner only (even if it existed before)
  rm -f "$1"
  cat >"$1"
  chmod 600 "$1"
}

make_tls() {
  # The broker's key is PKCS#8 encrypted with PBE-SHA1-3DES: Kafka's PEM key store needs an
  # encrypted key (ssl.key.password), and its loader cannot read OpenSSL's default PBES2 on
  # Java 17 ("PBES2 SecretKeyFactory not available"). The key password sits in
  # server.properties (0600); file permissions are the real protection, as for any key file.
  mkdir -p "$TLS" "$CRED"
  chmod 700 "$TLS" "$CRED"
  if [[ -s "$TLS/ca.key" && -s "$TLS/broker.pem" && -s "$TLS/broker-key.password" && -s "$CRED/ca.pem" ]]; then
    return 0
  fi
  local new; new="$(mktemp -d "$TLS/.new.XXXXXX")"
  local tag; tag="$(openssl rand -hex 4)"
  run_openssl() { openssl "$@" >>"$new/openssl.log" 2>&1 || die "openssl $1 failed creating TLS material; see $new/openssl.log"; }
  openssl rand -hex 24 >"$new/broker-key.password"
  run_openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$new/ca.key"
  run_openssl req -x509 -new -key "$new/ca.key" -sha256 -days 3650 \
    -subj "/CN=fedstream local Kafka CA $tag" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$new/ca.pem"
  run_openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$new/broker.plain.key"
  run_openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in "$new/broker.plain.key" \
    -passout "file:$new/broker-key.password" -out "$new/broker.key"
  rm -f "$new/broker.plain.key"
  run_openssl req -new -key "$new/broker.key" -passin "file:$new/broker-key.password" \
    -subj "/CN=localhost" -out "$new/broker.csr"
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" >"$new/broker.ext"
  run_openssl x509 -req -in "$new/broker.csr" -CA "$new/ca.pem" -CAkey "$new/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$new/broker.ext" \
    -out "$new/broker.crt"
  cat "$new/broker.key" "$new/broker.crt" "$new/ca.pem" | secret_file "$new/broker.pem"
  mv -f "$new/ca.key" "$new/broker-key.password" "$new/broker.pem" "$TLS/"
  chmod 644 "$new/ca.pem"
  mv -f "$new/ca.pem" "$CRED/ca.pem"
  rm -rf "$new"
  echo "kafka: created a CA and a broker certificate (trust anchor: $CRED/ca.pem)"
}

make_credentials() {
  if [[ ! -s "$CRED/admin.password" ]]; then
    [[ ! -f "$CLUSTER_ENV" ]] \
      || die "$CRED/admin.password is missing but the cluster in $DIR was formatted with it; restore it or remove $DIR"
    openssl rand -hex 24 | secret_file "$CRED/admin.password"
  fi
  local pw; pw="$(<"$CRED/admin.password")"
  secret_file "$ADMIN_PROPS" <<PROPS
# generated by infra/local/kafka.sh: the admin principal's Java client config (0600)
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$CRED/ca.pem
PROPS
}

# ---------------------------------------------------------------- broker config
write_config() {  # server.properties of node $1 (0600: it holds the JAAS lines)
  local i="$1" count; count="$(cluster_nodes)"
  local dir; dir="$(node_dir "$i")"
  local pw keypw rf isr
  pw="$(<"$CRED/admin.password")"
  keypw="$(<"$TLS/broker-key.password")"
  rf="$count"
  isr=$((count > 1 ? 2 : 1))
  mkdir -p "$dir/data" "$dir/logs"
  secret_file "$dir/server.properties" <<PROPS
# generated by infra/local/kafka.sh; edit the script, not this file (holds secrets: 0600)
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$(voters)
listeners=SASL_SSL://127.0.0.1:$(client_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")
advertised.listeners=SASL_SSL://127.0.0.1:$(client_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
# clients and inter-broker: SCRAM-SHA-512 over TLS
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
# controller quorum: SASL/PLAIN on loopback, for the nodes themselves
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$pw" user_admin="$pw";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS/broker.pem
ssl.key.password=$keypw
ssl.truststore.type=PEM
ssl.truststore.location=$CRED/ca.pem
ssl.endpoint.identification.algorithm=https
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
log.dirs=$dir/data
num.partitions=1
# internal and new topics: replicated on every node (up to 3), acks=all needs 2 in sync
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
# Flink's KafkaSink (EXACTLY_ONCE) opens transactions with transaction.timeout.ms up to 1 h
# by default; the broker's default ceiling is 15 min and would refuse them.
transaction.max.timeout.ms=3600000
# model releases and 1M-parameter updates are several MB
message.max.bytes=$MAX_MSG
replica.fetch.max.bytes=$MAX_MSG
# topics are created explicitly (with their size limits); a typo must fail, not create one
auto.create.topics.enable=false
log.retention.hours=168
PROPS
}

format_storage() {  # format every node once, with the admin's SCRAM credential
  local count="$NODES" i cluster_id pids=()
  # a base64url id may start with '-', which StorageTool then reads as an option (seen
  # once in 64 starts: "argument --cluster-id/-t: expected one argument"): draw again
  cluster_id="-"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(openssl rand 16 | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  printf 'cluster.id=%s\nnodes=%s\n' "$cluster_id" "$count" >"$CLUSTER_ENV.new"
  for ((i = 1; i <= count; i++)); do
    write_config "$i"
    local dir; dir="$(node_dir "$i")"
    # the password goes to StorageTool through an @argfile (0600), never through argv
    printf '"%s"\n' kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=admin,password=$(<"$CRED/admin.password")]" \
      | secret_file "$dir/format.args"
    kjava "@$dir/format.args" >"$dir/logs/format.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for ((i = 1; i <= count; i++)); do
    wait "${pids[i - 1]}" || failed="$i"
    rm -f "$(node_dir "$i")/format.args"
  done
  ((failed == 0)) || die "formatting storage of node $failed failed; see $(node_dir "$failed")/logs/format.log"
  mv "$CLUSTER_ENV.new" "$CLUSTER_ENV"
}

ports_free() {  # refuse clearly when node $1's ports are taken by something else
  local i="$1"
  if port_in_use "$(client_port "$i")"; then
    die "port $(client_port "$i") is already in use by another process (client port of node $i); set FEDSTREAM_KAFKA_PORT"
  fi
  if port_in_use "$(controller_port "$i")"; then
    die "controller port $(controller_port "$i") is already in use (node $i); set FEDSTREAM_KAFKA_CONTROLLER_PORT"
  fi
}

launch() {  # start node $1's JVM (does not wait)
  local i="$1" dir; dir="$(node_dir "$1")"
  ports_free "$i"
  write_config "$i"
  # 9>&-: the JVM must not inherit the lock held by this script
  nohup java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
    -cp "$(classpath)" kafka.Kafka "$dir/server.properties" \
    >"$dir/logs/stdout.log" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid" >"$dir/kafka.pid"
  # $! is a forked shell until it execs the JVM; until then its /proc cmdline is this
  # script's, and running_pid (which checks it, against pid reuse) would call the node
  # gone. Under load that window lasted long enough to lose a live node: wait it out.
  local tries=0
  while kill -0 "$pid" 2>/dev/null && ! running_pid "$i" >/dev/null && ((tries++ < 100)); do
    sleep 0.05
  done
}

await() {  # wait until node $1 answers, or fail with its log
  local i="$1" deadline="$2" dir; dir="$(node_dir "$1")"
  while ! answers "$i"; do
    if ! running_pid "$i" >/dev/null; then
      tail -n 30 "$dir/logs/server.log" "$dir/logs/stdout.log" >&2 2>/dev/null || true
      rm -f "$dir/kafka.pid"
      die "node $i exited during start; logs: $dir/logs"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$dir/logs/server.log" >&2 2>/dev/null || true
      die "node $i did not answer at 127.0.0.1:$(client_port "$i") within ${TIMEOUT}s (still starting? logs: $dir/logs)"
    fi
    sleep 0.5
  done
}

lock() {  # one start/stop at a time per cluster folder
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock 9
}

where() {
  echo "kafka: bootstrap $(bootstrap) (SASL_SSL, SCRAM-SHA-512); credentials: $CRED (ca.pem, admin.properties, admin.password); logs: $DIR/node-N/logs/server.log"
}

start() {
  need_jars
  check_settings
  lock
  if [[ -e "$DIR/data/meta.properties" ]]; then
    die "$DIR holds a cluster of the older, unsecured layout; remove $DIR (or use another FEDSTREAM_KAFKA_DIR)"
  fi
  if [[ -f "$CLUSTER_ENV" && "$(cluster_nodes)" != "$NODES" ]]; then
    die "the cluster in $DIR was created with $(cluster_nodes) node(s), FEDSTREAM_KAFKA_NODES=$NODES; use another FEDSTREAM_KAFKA_DIR (or remove $DIR)"
  fi
  local i count missing=() deadline=$((SECONDS + TIMEOUT))
  count="$(cluster_nodes)"
  for ((i = 1; i <= count; i++)); do
    running_pid "$i" >/dev/null || missing+=("$i")
  done
  for i in "${missing[@]}"; do ports_free "$i"; done  # before any slow setup
  make_tls
  make_credentials
  [[ -f "$CLUSTER_ENV" ]] || format_storage
  for i in "${missing[@]}"; do launch "$i"; done
  for ((i = 1; i <= count; i++)); do await "$i" "$deadline"; done
  if ((${#missing[@]} == 0)); then
    echo "kafka: already running ($count node(s))"
  else
    echo "kafka: up, $count node(s) (started: ${missing[*]})"
  fi
  where
}

start_node() {
  local i="${1:?node number}"
  need_jars
  check_settings
  lock
  [[ -f "$CLUSTER_ENV" ]] || die "no cluster in $DIR yet; run '$0 start' first"
  [[ "$i" =~ ^[0-9]+$ ]] && ((i >= 1 && i <= $(cluster_nodes))) \
    || die "node must be 1..$(cluster_nodes), got '$i'"
  if running_pid "$i" >/dev/null; then
    echo "kafka: node $i already running"
  else
    launch "$i"
  fi
  await "$i" $((SECONDS + TIMEOUT))
  echo "kafka: node $i up at 127.0.0.1:$(client_port "$i")"
}

stop_nodes() {  # SIGTERM the given nodes together, wait, SIGKILL what is left
  local i pid pids=() names=()
  for i in "$@"; do
    if pid="$(running_pid "$i")"; then
      kill -TERM "$pid"
      pids+=("$pid")
      names+=("$i")
    else
      rm -f "$(node_dir "$i")/kafka.pid"
    fi
  done
  if ((${#pids[@]} == 0)); then
    echo "kafka: not running (dir $DIR)"
    return 0
  fi
  local deadline=$((SECONDS + STOP_WAIT)) k
  for k in "${!pids[@]}"; do
    while kill -0 "${pids[k]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "${pids[k]}" 2>/dev/null; then
      echo "kafka: node ${names[k]} (pid ${pids[k]}) did not stop within ${STOP_WAIT}s, killing it" >&2
      kill -KILL "${pids[k]}" 2>/dev/null || true
    fi
    rm -f "$(node_dir "${names[k]}")/kafka.pid"
  done
  echo "kafka: stopped node(s) ${names[*]}; logs: $DIR/node-N/logs"
}

stop() {
  [[ -d "$DIR" ]] || { echo "kafka: not running (no $DIR)"; return 0; }
  lock
  local i all=()
  for ((i = 1; i <= $(cluster_nodes); i++)); do all+=("$i"); done
  stop_nodes "${all[@]}"
}

stop_node() {
  local i="${1:?node number}"
  lock
  [[ "$i" =~ ^[0-9]+$ ]] && ((i >= 1 && i <= $(cluster_nodes))) \
    || die "node must be 1..$(cluster_nodes), got '$i'"
  stop_nodes "$i"
}

status() {  # 0: every node answers; 3: none runs; 1: anything in between
  [[ -f "$CLUSTER_ENV" ]] || { echo "kafka: not running (no cluster in $DIR)"; return 3; }
  local i pid up=0 running=0 count; count="$(cluster_nodes)"
  for ((i = 1; i <= count; i++)); do
    if pid="$(running_pid "$i")"; then
      running=$((running + 1))
      if answers "$i"; then
        up=$((up + 1))
        echo "kafka: node $i running (pid $pid) at 127.0.0.1:$(client_port "$i")"
      else
        echo "kafka: node $i process $pid exists but does not answer; logs: $(node_dir "$i")/logs/server.log"
      fi
    else
      echo "kafka: node $i not running"
    fi
  done
  ((running > 0)) || return 3
  where
  ((up == count)) || return 1
}

topic() {  # create a topic if missing (idempotent), replicated on every node
  local name="${1:?topic name}" parts="${2:-1}" maxb="${3:-$MAX_MSG}"
  [[ -f "$ADMIN_PROPS" ]] || die "no credentials in $CRED; run '$0 start' first"
  local rf; rf="$(cluster_nodes)"
  kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" \
    --command-config "$ADMIN_PROPS" --create --if-not-exists --topic "$name" \
    --partitions "$parts" --replication-factor "$rf" \
    --config "max.message.bytes=$maxb" >/dev/null
  echo "kafka: topic $name ($parts partitions, replication $rf, max.message.bytes=$maxb) at $(bootstrap)"
}

client_env() {  # how a client connects (paths only), for eval "$(kafka.sh env)"
  printf 'export %s=%q\n' \
    FEDSTREAM_KAFKA_SECURITY_PROTOCOL SASL_SSL \
    FEDSTREAM_KAFKA_SASL_MECHANISM SCRAM-SHA-512 \
    FEDSTREAM_KAFKA_USERNAME admin \
    FEDSTREAM_KAFKA_PASSWORD_FILE "$CRED/admin.password" \
    FEDSTREAM_KAFKA_CA_FILE "$CRED/ca.pem"
  echo "# bootstrap: $(bootstrap)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  topic) shift; topic "$@" ;;
  stop-node) stop_node "${2:-}" ;;
  start-node) start_node "${2:-}" ;;
  env) client_env ;;
  *)
    echo "usage: $0 start|stop|status|env|topic NAME [PARTITIONS] [MAX_MESSAGE_BYTES]|stop-node N|start-node N" >&2
    exit 2
    ;;
esac
