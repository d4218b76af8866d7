#!/usr/bin/env bash
# The CRDs the cluster module's manifests are validated against, from Maven Central:
#   Strimzi 1.2.0: generated from io.strimzi:api with io.strimzi:crd-generator, with the
#     arguments of Strimzi's own release build (the output is byte-identical to the
#     packaging/install/cluster-operator/04x-Crd-*.yaml files of the 1.2.0 release);
#   Flink Kubernetes Operator 1.10.0: the CRD inside flink-kubernetes-operator-api.
# Prints the folder holding them; cached, so the second run is instant.
#
#   crds.sh            resolve (mvn), generate, print the folder
#
# Needs Maven and a Java >= 21 for Strimzi's generator (its classes are Java 21): java on
# PATH, JAVA_HOME, FEDSTREAM_CRD_JAVA, or a JDK under /usr/lib/jvm.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STRIMZI=1.2.0
FLINK_OPERATOR=1.10.0
CACHE="${FEDSTREAM_TF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fedstream/terraform}"
OUT="$CACHE/crds/strimzi-$STRIMZI-flink-operator-$FLINK_OPERATOR"

say() { echo "crds: $*" >&2; }
die() { echo "crds: $*" >&2; exit 1; }

if [[ -f "$OUT/.complete" ]]; then
  echo "$OUT"
  exit 0
fi

java_major() { "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p'; }

find_java21() {
  local candidate
  for candidate in "${FEDSTREAM_CRD_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if (($(java_major "$candidate" || echo 0) >= 21)); then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

command -v mvn >/dev/null || die "mvn not found: install Maven"
JAVA="$(find_java21)" || die "Strimzi's CRD generator needs Java >= 21 (set FEDSTREAM_CRD_JAVA=/path/to/java)"

rm -rf "$OUT.partial"
mkdir -p "$OUT.partial/lib" "$OUT.partial/strimzi" "$OUT.partial/flink-operator"
say "resolving io.strimzi:api/crd-generator $STRIMZI and flink-kubernetes-operator-api $FLINK_OPERATOR from Maven Central"
mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$OUT.partial/lib" \
  -DincludeScope=runtime >"$OUT.partial/mvn.log" 2>&1 \
  || { tail -n 30 "$OUT.partial/mvn.log" >&2; die "mvn could not resolve the operators' artifacts"; }

say "generating Strimzi $STRIMZI CRDs ($JAVA)"
model=io.strimzi.api.kafka.model
"$JAVA" -cp "$OUT.partial/lib/*" io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
  --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
  "$model.kafka.Kafka=$OUT.partial/strimzi/040-Crd-kafka.yaml" \
  "$model.topic.KafkaTopic=$OUT.partial/strimzi/043-Crd-kafkatopic.yaml" \
  "$model.user.KafkaUser=$OUT.partial/strimzi/044-Crd-kafkauser.yaml" \
  "$model.nodepool.KafkaNodePool=$OUT.partial/strimzi/045-Crd-kafkanodepool.yaml" \
  >"$OUT.partial/generate.log" 2>&1 \
  || { tail -n 30 "$OUT.partial/generate.log" >&2; die "Strimzi's CRD generator failed"; }

(
  cd "$OUT.partial/flink-operator"
  "$(dirname "$JAVA")/jar" xf "$OUT.partial/lib/flink-kubernetes-operator-api-$FLINK_OPERATOR.jar" \
    META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml
  mv META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml .
  rm -rf META-INF
)
rm -rf "$OUT.partial/lib"
touch "$OUT.partial/.complete"
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
say "CRDs in $OUT"
echo "$OUT"
