#!/usr/bin/env bash
# Prepares mongo-java-server (a MongoDB-wire server from Maven Central) for the tests and prints
# the Java classpath to run it with: java -cp "$CP" MongoWireServer HOST PORT [H2_FILE].
# Needs a JDK (17+) and Maven; the jars are cached in target/mongo-wire-server.
set -euo pipefail
cd "$(dirname "$0")/.."
src=tests/support/mongo-wire-server
out=target/mongo-wire-server
if [ ! -f "$out/classes/MongoWireServer.class" ] || [ "$src/MongoWireServer.java" -nt "$out/classes/MongoWireServer.class" ] || [ "$src/pom.xml" -nt "$out/classes/MongoWireServer.class" ]; then
    mkdir -p "$out/classes"
    mvn -q -B -f "$src/pom.xml" dependency:copy-dependencies -DoutputDirectory="$PWD/$out/libs" >&2
    javac -d "$out/classes" -cp "$out/libs/*" "$src/MongoWireServer.java" >&2
fi
echo "$PWD/$out/classes:$PWD/$out/libs/*"
