#!/usr/bin/env bash
# Run a real single-node Apache Cassandra 5.0 (jars from Maven Central) on
# 127.0.0.1 for integration tests and CI. No Docker, no tarball: the jars are
# resolved by scripts/cassandra/pom.xml into the Maven local repository.
#
# usage: scripts/cassandra/cassandra.sh <command>
#   start     start in the background (no-op if already running); does not wait
#   wait      block until a real CQL query succeeds (timeout: CASSANDRA_WAIT_TIMEOUT)
#   up        start + wait
#   stop      SIGTERM by PID file (only our own process), wait for exit, SIGKILL after
#             CASSANDRA_STOP_TIMEOUT; no-op if not running
#   restart   stop + start + wait
#   status    exit 0 and print details if running, exit 3 if not
#   fetch     only resolve/download the jars (CI cache warm-up)
#   classpath print the resolved classpath
#   logs      tail the server log (args are passed to tail, default -n 100)
#   wipe      stop, then delete all data (keeps config and logs)
#   nodetool  run nodetool (needs CASSANDRA_JMX_PORT set at start)
#
# environment (all optional):
#   CASSANDRA_DIR            run dir (conf, data, logs, pid)   default <repo>/.cassandra
#   CASSANDRA_PORT           CQL native transport port          default 9042
#   CASSANDRA_STORAGE_PORT   internode port (loopback only)     default 17000
#   CASSANDRA_JMX_PORT       local-only JMX port; unset = JMX off (default)
#   CASSANDRA_HEAP           -Xms/-Xmx                          default 1G
#   CASSANDRA_WAIT_TIMEOUT   seconds for `wait`                 default 180
#   CASSANDRA_STOP_TIMEOUT   seconds before SIGKILL in `stop`   default 60
#   CASSANDRA_M2_REPO        Maven local repo; unset = Maven's default (~/.m2/repository)
#   CASSANDRA_CACHE_DIR      machine-wide cache (resolved classpath, CDS archive), outside
#                            the repo so fresh clones (CI) reuse it
#                            default ${XDG_CACHE_HOME:-~/.cache}/cassandra-test
#   CASSANDRA_FAST_DDL       1: skip fsync of schema tables on DDL (-Dcassandra.unsafesystem);
#                            ~3x faster CREATE/DROP, but schema made since the last clean
#                            `stop` is lost if the server is killed. default 0
#   CASSANDRA_CDS            1 (default): keep an AppCDS class archive in the cache dir
#                            (written on the first clean `stop`; later starts ~40% faster); 0: off
#   CASSANDRA_JVM_OPTS       extra JVM options, appended last so they win (word-split);
#                            e.g. "-XX:TieredStopAtLevel=4" for the full C2 JIT
#   JAVA_HOME                JDK to use (17 required); else `java` on PATH
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

CASSANDRA_DIR="${CASSANDRA_DIR:-$REPO_ROOT/.cassandra}"
mkdir -p "$CASSANDRA_DIR"
CASSANDRA_DIR="$(cd "$CASSANDRA_DIR" && pwd)"
CASSANDRA_HOST=127.0.0.1
CASSANDRA_PORT="${CASSANDRA_PORT:-9042}"
CASSANDRA_STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-17000}"
CASSANDRA_JMX_PORT="${CASSANDRA_JMX_PORT:-}"
CASSANDRA_HEAP="${CASSANDRA_HEAP:-1G}"
CASSANDRA_WAIT_TIMEOUT="${CASSANDRA_WAIT_TIMEOUT:-180}"
CASSANDRA_STOP_TIMEOUT="${CASSANDRA_STOP_TIMEOUT:-60}"
CASSANDRA_M2_REPO="${CASSANDRA_M2_REPO:-}"
CASSANDRA_CACHE_DIR="${CASSANDRA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cassandra-test}"
CASSANDRA_CDS="${CASSANDRA_CDS:-1}"
CASSANDRA_FAST_DDL="${CASSANDRA_FAST_DDL:-0}"

CONF_DIR="$CASSANDRA_DIR/conf"
DATA_DIR="$CASSANDRA_DIR/data"
LOG_DIR="$CASSANDRA_DIR/logs"
TMP_DIR="$CASSANDRA_DIR/tmp"
PID_FILE="$CASSANDRA_DIR/cassandra.pid"
RUN_ENV="$CASSANDRA_DIR/run.env"       # ports of the running instance
CDS_DUMP="$CASSANDRA_DIR/cds-dump.jsa"  # archive being written by a running JVM
YAML="$CONF_DIR/cassandra.yaml"
MAIN_CLASS=org.apache.cassandra.service.CassandraDaemon

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

log() { printf '[cassandra.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- classpath --

mvn_cmd() {
  local args=(-B -q -f "$SCRIPT_DIR/pom.xml")
  [[ -n "$CASSANDRA_M2_REPO" ]] && args+=("-Dmaven.repo.local=$CASSANDRA_M2_REPO")
  mvn "${args[@]}" "$@"
}

# The resolved classpath is cached per (pom.xml content, Maven repo) in the
# machine-wide cache dir, so a fresh clone does not even start Maven.
cp_file() {
  local key
  key="$(printf '%s|%s' "$(sha256sum "$SCRIPT_DIR/pom.xml" | cut -c1-64)" "${CASSANDRA_M2_REPO:-default}" | sha256sum | cut -c1-16)"
  echo "$CASSANDRA_CACHE_DIR/classpath-$key.txt"
}

classpath_valid() {
  local f="$1" jar jars
  [[ -s "$f" ]] || return 1
  IFS=: read -r -a jars <"$f"
  (( ${#jars[@]} > 0 )) || return 1
  for jar in "${jars[@]}"; do [[ -f "$jar" ]] || return 1; done
  return 0
}

# Sets CP to the classpath, resolving it with Maven if needed.
resolve_classpath() {
  local f; f="$(cp_file)"
  if ! classpath_valid "$f"; then
    command -v mvn >/dev/null || die "mvn not found on PATH (needed to fetch cassandra-all from Maven Central)"
    mkdir -p "$LOG_DIR" "$CASSANDRA_CACHE_DIR"
    log "resolving cassandra-all and its dependencies with Maven (first run downloads ~90 MB)..."
    local t0; t0=$(now_ms)
    if ! mvn_cmd org.apache.maven.plugins:maven-dependency-plugin:3.8.1:build-classpath \
          -Dmdep.includeScope=runtime -Dmdep.outputFile="$f.tmp.$$" >"$LOG_DIR/mvn.log" 2>&1; then
      rm -f "$f.tmp.$$"
      tail -n 40 "$LOG_DIR/mvn.log" >&2
      die "Maven dependency resolution failed (full log: $LOG_DIR/mvn.log)"
    fi
    mv -f "$f.tmp.$$" "$f"
    log "jars resolved in $(( $(now_ms) - t0 ))ms"
  fi
  CP="$(cat "$f")"
}

# ------------------------------------------------------------------ process --

# Is $1 the Cassandra process started from *this* run dir? (never match other java processes)
is_our_pid() {
  local pid="$1" cmd
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmd="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  else
    cmd="$(ps -p "$pid" -o args= 2>/dev/null | tr ' ' '\n')" || return 1
  fi
  grep -qxF -- "$MAIN_CLASS" <<<"$cmd" && grep -qxF -- "-Dcassandra.config=file://$YAML" <<<"$cmd"
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if is_our_pid "$pid"; then echo "$pid"; return 0; fi
  return 1
}

# Load the ports the running instance was started with (so wait/status work
# even if the caller's environment differs).
load_run_env() {
  if [[ -f "$RUN_ENV" ]]; then
    # shellcheck disable=SC1090
    source "$RUN_ENV"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/$CASSANDRA_HOST/$1") 2>/dev/null; }

# ------------------------------------------------------------------- config --

write_config() {
  mkdir -p "$CONF_DIR" "$DATA_DIR"/{data,commitlog,saved_caches,hints,cdc_raw} "$LOG_DIR" "$TMP_DIR"
  cat >"$YAML" <<EOF
# Generated by scripts/cassandra/cassandra.sh on every start; edit the script, not this file.
# Single-node test server on loopback. Not for production.
cluster_name: chat-test
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
auto_bootstrap: false
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$CASSANDRA_HOST:$CASSANDRA_STORAGE_PORT"

listen_address: $CASSANDRA_HOST
rpc_address: $CASSANDRA_HOST
storage_port: $CASSANDRA_STORAGE_PORT
start_native_transport: true
native_transport_port: $CASSANDRA_PORT

authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer

data_file_directories:
  - $DATA_DIR/data
commitlog_directory: $DATA_DIR/commitlog
saved_caches_directory: $DATA_DIR/saved_caches
hints_directory: $DATA_DIR/hints
cdc_raw_directory: $DATA_DIR/cdc_raw

commitlog_sync: periodic
commitlog_sync_period: 10000ms

# A fresh cluster that is never upgraded from 4.x: enable all 5.0 features.
storage_compatibility_mode: NONE

# Test-friendly: no hints on a single node, no snapshots on DROP/TRUNCATE
# (tests drop/truncate a lot), one compactor on a 2-core box.
hinted_handoff_enabled: false
auto_snapshot: false
snapshot_before_compaction: false
concurrent_compactors: 1

# Slightly more generous timeouts than the defaults: CI machines are small
# and shared, and a test server should not flake on a GC pause.
read_request_timeout: 10000ms
range_request_timeout: 10000ms
write_request_timeout: 5000ms
counter_write_request_timeout: 5000ms
cas_contention_timeout: 2000ms
truncate_request_timeout: 60000ms
request_timeout: 10000ms
EOF

  cat >"$CONF_DIR/logback.xml" <<'EOF'
<!-- Generated by scripts/cassandra/cassandra.sh. Logs to ${cassandra.logdir}/system.log at INFO. -->
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>${cassandra.logdir}/system.log.%i.zip</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE" />
  </root>
</configuration>
EOF

  cat >"$CONF_DIR/logback-tools.xml" <<'EOF'
<!-- Generated by scripts/cassandra/cassandra.sh, for `nodetool`: warnings to stderr only. -->
<configuration scan="false">
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR" /></root>
</configuration>
EOF
}

# Java 17 module-system flags Cassandra needs (from Cassandra 5.0's conf/jvm17-server.options;
# we only have the jars, so they are supplied here). Used by the server and by nodetool.
JPMS_OPTS=(
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
)

# Options from Cassandra 5.0's conf/jvm-server.options + conf/jvm17-server.options
# (we only have the jars, so they are supplied here), trimmed for a small test node.
jvm_opts() {
  local cp="$1" jamm
  JVM_OPTS=(
    "-Xms$CASSANDRA_HEAP" "-Xmx$CASSANDRA_HEAP" -Xss256k
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:MaxGCPauseMillis=300
    -XX:+PerfDisableSharedMem -XX:+ExitOnOutOfMemoryError
    # C1-only JIT: halves the CPU spent starting up on a 2-core box; plenty for tests.
    -XX:TieredStopAtLevel=1
    -Djava.net.preferIPv4Stack=true
    -Djdk.nio.maxCachedBufferSize=1048576
    "${JPMS_OPTS[@]}"
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    # Locations
    "-Dcassandra.config=file://$YAML"
    "-Dcassandra.storagedir=$DATA_DIR"
    "-Dcassandra.logdir=$LOG_DIR"
    "-Dlogback.configurationFile=file://$CONF_DIR/logback.xml"
    "-Djava.io.tmpdir=$TMP_DIR"
    "-Djna.tmpdir=$TMP_DIR"
    "-Dio.netty.native.workdir=$TMP_DIR"
    # Fast single-node startup
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.superuser_setup_delay_ms=0
    # skip the ~1 s memtable row-overhead measurement at boot (180 is what it measures here)
    -Dcassandra.memtable.row_overhead_size=180
    # Fast single-node shutdown: no 2 s gossip shutdown announcement, no 2 s
    # internode-messaging quiesce (there are no peers). Drain still flushes memtables.
    -Dcassandra.shutdown_announce_in_ms=0
    -Dcassandra.test.messagingService.nonGracefulShutdown=true
  )
  if [[ "$CASSANDRA_FAST_DDL" == 1 ]]; then
    # Skip the flush+fsync of schema tables on every DDL (~3x faster CREATE/DROP).
    # Safe with a clean `stop` (drain flushes), but after a crash/SIGKILL the schema
    # changes since the last flush are lost, and with them the data in those tables.
    JVM_OPTS+=(-Dcassandra.unsafesystem=true)
  fi
  jamm="$(tr ':' '\n' <<<"$cp" | grep -m1 '/jamm-[0-9.]*\.jar$' || true)"
  [[ -n "$jamm" ]] && JVM_OPTS+=("-javaagent:$jamm")
  if [[ -n "$CASSANDRA_JMX_PORT" ]]; then
    # local-only JMX (bound to loopback by Cassandra), no remote JMX
    JVM_OPTS+=("-Dcassandra.jmx.local.port=$CASSANDRA_JMX_PORT")
  fi
  CDS_PENDING=""
  if [[ "$CASSANDRA_CDS" == 1 ]]; then
    # AppCDS: the JVM validates the archive (JDK build, jar paths/sizes/mtimes) and
    # runs without it on any mismatch, so a stale archive is harmless.
    local archive; archive="$(cds_archive)"
    JVM_OPTS+=(-XX:+UnlockDiagnosticVMOptions -XX:+AllowArchivingWithJavaAgent)
    if [[ -s "$archive" ]]; then
      JVM_OPTS+=("-XX:SharedArchiveFile=$archive")
    else
      rm -f "$CDS_DUMP"
      JVM_OPTS+=("-XX:ArchiveClassesAtExit=$CDS_DUMP")
      CDS_PENDING="$archive"
    fi
  fi
  if [[ -n "${CASSANDRA_JVM_OPTS:-}" ]]; then
    # shellcheck disable=SC2206
    JVM_OPTS+=($CASSANDRA_JVM_OPTS)
  fi
}

check_java() {
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA_HOME or put a JDK 17 on PATH)"
  local props v
  props="$("$JAVA" -XshowSettings:properties -version 2>&1)"
  v="$(sed -n 's/^ *java.specification.version = //p' <<<"$props")"
  [[ "$v" == 17 ]] || log "WARNING: Cassandra 5.0 supports Java 11/17; this is Java '$v' (flags here are for 17)"
  JAVA_ID="$(grep -E '^ *(java.home|java.vm.version|java.runtime.version) = ' <<<"$props" | tr -d ' ' | tr '\n' ';')"
}

cds_archive() {
  local key
  key="$(printf '%s|%s|cds-v1' "$JAVA_ID" "$CP" | sha256sum | cut -c1-16)"
  echo "$CASSANDRA_CACHE_DIR/cds-$key.jsa"
}

# After a clean exit of a JVM started with -XX:ArchiveClassesAtExit, publish the archive.
publish_cds() {
  local target="${CDS_PENDING:-}"
  [[ -n "$target" && -s "$CDS_DUMP" ]] || { rm -f "$CDS_DUMP"; return 0; }
  if grep -q 'Error occurred during CDS dumping' "$LOG_DIR/stdout.log" 2>/dev/null; then
    log "CDS archive dump failed (see $LOG_DIR/stdout.log); continuing without it"
    rm -f "$CDS_DUMP"; return 0
  fi
  mkdir -p "$CASSANDRA_CACHE_DIR"
  cp -f "$CDS_DUMP" "$target.tmp.$$" && mv -f "$target.tmp.$$" "$target" && rm -f "$CDS_DUMP"
  log "saved class-data-sharing archive for faster starts: $target"
}

# ----------------------------------------------------------------- commands --

cmd_start() {
  local pid
  if pid="$(running_pid)"; then
    load_run_env
    log "already running (pid $pid, CQL $CASSANDRA_HOST:$CASSANDRA_PORT)"
    return 0
  fi
  if [[ -f "$PID_FILE" ]]; then
    log "note: the previous server in $CASSANDRA_DIR did not stop cleanly (killed?); its commit log will be replayed"
    rm -f "$PID_FILE"
  fi
  check_java
  for p in "$CASSANDRA_PORT" "$CASSANDRA_STORAGE_PORT" ${CASSANDRA_JMX_PORT:+"$CASSANDRA_JMX_PORT"}; do
    port_in_use "$p" && die "port $CASSANDRA_HOST:$p is already in use by another process (set CASSANDRA_PORT / CASSANDRA_STORAGE_PORT / CASSANDRA_JMX_PORT)"
  done
  resolve_classpath
  local cp="$CP"
  write_config
  jvm_opts "$cp"
  # Fresh log per start so `wait` never matches a line from a previous run.
  [[ -f "$LOG_DIR/system.log" ]] && mv -f "$LOG_DIR/system.log" "$LOG_DIR/system.prev.log"
  printf 'CASSANDRA_PORT=%q\nCASSANDRA_STORAGE_PORT=%q\nCASSANDRA_JMX_PORT=%q\nCASSANDRA_START_MS=%q\nCDS_PENDING=%q\n' \
    "$CASSANDRA_PORT" "$CASSANDRA_STORAGE_PORT" "$CASSANDRA_JMX_PORT" "$(now_ms)" "$CDS_PENDING" >"$RUN_ENV"
  local launcher=()
  command -v setsid >/dev/null && launcher=(setsid)
  # Cassandra always calls mlockall(MCL_CURRENT), which pins the whole heap in RAM
  # (RSS ~1.5 GB at once) and costs ~3.5 s of startup. A test node does not need it:
  # a small RLIMIT_MEMLOCK makes the call fail harmlessly (one WARN line). As root
  # the limit is ignored unless CAP_IPC_LOCK is dropped too, which setpriv does.
  if [[ "$(id -u)" == 0 ]] && command -v setpriv >/dev/null \
      && setpriv --bounding-set -ipc_lock true 2>/dev/null; then
    launcher+=(setpriv --bounding-set -ipc_lock)
  fi
  # setsid (without -f) and setpriv exec in place here, so $! is the JVM's own PID.
  ( exec 9>&-  # do not leak the start/stop lock into the server
    cd "$CASSANDRA_DIR" && { ulimit -l 64 2>/dev/null || true; } \
      && exec "${launcher[@]}" "$JAVA" "${JVM_OPTS[@]}" -cp "$cp" "$MAIN_CLASS" \
      </dev/null >"$LOG_DIR/stdout.log" 2>&1 ) &
  pid=$!
  echo "$pid" >"$PID_FILE"
  sleep 0.5
  if ! is_our_pid "$pid"; then
    rm -f "$PID_FILE"
    tail -n 50 "$LOG_DIR/stdout.log" >&2 || true
    die "JVM exited immediately (see $LOG_DIR/stdout.log)"
  fi
  log "started pid $pid (CQL $CASSANDRA_HOST:$CASSANDRA_PORT, storage $CASSANDRA_STORAGE_PORT, dir $CASSANDRA_DIR)"
}

cql_ready() {
  if command -v node >/dev/null; then
    node "$SCRIPT_DIR/cql-ping.mjs" "$CASSANDRA_HOST" "$CASSANDRA_PORT" 5000 2>/dev/null
  else
    # No Node: TCP connect + the server's own "listening" log line.
    port_in_use "$CASSANDRA_PORT" && grep -q 'Starting listening for CQL clients' "$LOG_DIR/system.log" 2>/dev/null \
      && echo "(version unknown: no node, checked TCP + log line)"
  fi
}

print_failure_logs() {
  log "---- tail of $LOG_DIR/system.log ----"
  tail -n 60 "$LOG_DIR/system.log" >&2 2>/dev/null || true
  log "---- tail of $LOG_DIR/stdout.log ----"
  tail -n 20 "$LOG_DIR/stdout.log" >&2 2>/dev/null || true
}

cmd_wait() {
  load_run_env
  local t0 deadline pid version
  t0=$(now_ms)
  deadline=$(( t0 + CASSANDRA_WAIT_TIMEOUT * 1000 ))
  while :; do
    if ! pid="$(running_pid)"; then
      print_failure_logs
      die "Cassandra is not running (did it crash during startup?)"
    fi
    if port_in_use "$CASSANDRA_PORT" && version="$(cql_ready)"; then
      local since="" start_ms="${CASSANDRA_START_MS:-}"
      [[ -n "$start_ms" ]] && since=", $(( $(now_ms) - start_ms ))ms since start"
      log "ready: Cassandra ${version:-?} on $CASSANDRA_HOST:$CASSANDRA_PORT (pid $pid, waited $(( $(now_ms) - t0 ))ms$since)"
      return 0
    fi
    if (( $(now_ms) > deadline )); then
      print_failure_logs
      die "timed out after ${CASSANDRA_WAIT_TIMEOUT}s waiting for CQL on $CASSANDRA_HOST:$CASSANDRA_PORT"
    fi
    sleep 0.5
  done
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  load_run_env
  log "stopping pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(now_ms) + CASSANDRA_STOP_TIMEOUT * 1000 )) killed=0
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(now_ms) > deadline )); then
      log "still alive after ${CASSANDRA_STOP_TIMEOUT}s, sending SIGKILL to pid $pid"
      # re-check identity right before SIGKILL
      if is_our_pid "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
      killed=1
      sleep 1
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  if (( killed )); then rm -f "$CDS_DUMP"; else publish_cds; fi
  log "stopped"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    load_run_env
    local rss state=starting
    rss="$(awk '/^VmRSS/ {print $2 " " $3}' "/proc/$pid/status" 2>/dev/null || echo '?')"
    cql_ready >/dev/null 2>&1 && state=ready
    echo "running pid=$pid state=$state cql=$CASSANDRA_HOST:$CASSANDRA_PORT storage_port=$CASSANDRA_STORAGE_PORT rss=$rss dir=$CASSANDRA_DIR"
    return 0
  fi
  echo "not running (dir=$CASSANDRA_DIR)"
  return 3
}

cmd_nodetool() {
  load_run_env
  [[ -n "$CASSANDRA_JMX_PORT" ]] || die "nodetool needs JMX: start with CASSANDRA_JMX_PORT=<port>"
  resolve_classpath
  exec "$JAVA" "${JPMS_OPTS[@]}" -XX:TieredStopAtLevel=1 -cp "$CP" \
    "-Dlogback.configurationFile=file://$CONF_DIR/logback-tools.xml" "-Duser.home=$TMP_DIR" \
    org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$CASSANDRA_JMX_PORT" "$@"
}

# Serialise start/stop of one run dir (e.g. parallel test workers all calling `up`):
# the second caller waits, then finds the server already running.
take_lock() {
  command -v flock >/dev/null || return 0
  exec 9>"$CASSANDRA_DIR/.lock"
  flock -w $(( CASSANDRA_WAIT_TIMEOUT + CASSANDRA_STOP_TIMEOUT + 60 )) 9 || die "timed out waiting for $CASSANDRA_DIR/.lock"
}

case "${1:-}" in
  start|up|stop|restart|wipe) take_lock ;;
esac

case "${1:-}" in
  start) cmd_start ;;
  wait) cmd_wait ;;
  up) cmd_start; cmd_wait ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start; cmd_wait ;;
  status) cmd_status ;;
  fetch) resolve_classpath; log "classpath cached in $(cp_file)" ;;
  classpath) resolve_classpath; echo "$CP" ;;
  logs) shift; tail "${@:--n100}" "$LOG_DIR/system.log" ;;
  wipe) cmd_stop; rm -rf "$DATA_DIR"; log "data wiped: $DATA_DIR" ;;
  nodetool) shift; cmd_nodetool "$@" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2 ;;
esac
