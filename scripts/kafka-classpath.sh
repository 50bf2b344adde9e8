#!/usr/bin/env bash
# Prepares the Apache Kafka jars (the broker and its command-line tools, from Maven Central; see
# tests/support/kafka/pom.xml) and prints the Java classpath to run them with, and nothing else:
#   java -cp "$(scripts/kafka-classpath.sh)" kafka.Kafka server.properties
# Needs a JDK 17+ and Maven. The jars are copied once to target/kafka/libs; Maven only runs again
# when the pom changes or the copy is incomplete, and tries offline (from ~/.m2) first.
set -euo pipefail
cd "$(dirname "$0")/.."
pom=tests/support/kafka/pom.xml
out=target/kafka
stamp="$(sha256sum "$pom" | cut -d' ' -f1)"

# libs/.complete holds the pom's hash and is written only after every jar has been copied.
complete() { [ "$(cat "$out/libs/.complete" 2>/dev/null)" = "$stamp" ]; }

if ! complete; then
    mkdir -p "$out"
    exec 9>"$out/.lock"
    flock 9 # concurrent callers (parallel tests) wait for the first one's copy
    if ! complete; then
        rm -rf "$out/libs.tmp"
        copy=(dependency:copy-dependencies -DoutputDirectory="$PWD/$out/libs.tmp")
        if ! mvn -o -q -B -f "$pom" "${copy[@]}" >"$out/mvn-offline.log" 2>&1; then
            echo "== resolving the Kafka jars with Maven (once; they go to $out/libs)" >&2
            rm -rf "$out/libs.tmp"
            mvn -q -B -f "$pom" "${copy[@]}" >&2
        fi
        rm -f "$out/mvn-offline.log"
        echo "$stamp" >"$out/libs.tmp/.complete"
        rm -rf "$out/libs"
        mv "$out/libs.tmp" "$out/libs"
    fi
    exec 9>&-
fi
echo "$PWD/$out/libs/*"
