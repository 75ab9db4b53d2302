#!/usr/bin/env bash
# Generates the protobuf and gRPC Python code of proto/parley/v1 into
# clients/python/parley/v1 with Debian's protoc (protobuf-compiler) and
# grpc_python_plugin (protobuf-compiler-grpc). The output is committed and never
# hand-edited; `--check` regenerates into a temporary directory and fails when
# it differs from what is committed (CI runs it).
#
# The proto package is `parley.v1`, so the generated modules import each other
# as `parley.v1.<name>_pb2`: generating straight into the `parley` Python
# package makes those imports resolve to `parley/v1/` without any rewriting.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
check=0
[ "${1:-}" = "--check" ] && check=1

for tool in protoc grpc_python_plugin; do
  command -v "$tool" >/dev/null || { echo "generate.sh: $tool not found (apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2; exit 2; }
done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
protos=(parley/v1/identity.proto parley/v1/handshake.proto parley/v1/message.proto parley/v1/gateway.proto parley/v1/registry.proto parley/v1/audit.proto parley/v1/memory.proto)
protoc -I "$root/proto" --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  "${protos[@]}"
# Messages-only files get an empty *_pb2_grpc.py: keep only the services'.
for f in "$out"/parley/v1/*_pb2_grpc.py; do
  grep -q '^class ' "$f" || rm -f "$f"
done
{
  echo '"""Generated from proto/parley/v1 by clients/python/scripts/generate.sh. Do not edit."""'
} > "$out/parley/v1/__init__.py"
printf '%s\n' "protoc: $(protoc --version)" > "$out/parley/v1/GENERATED_BY"

target="$here/parley/v1"
if [ "$check" = 1 ]; then
  if ! diff -r "$out/parley/v1" "$target" >/dev/null 2>&1; then
    echo "clients/python/parley/v1 differs from what proto/ generates (run clients/python/scripts/generate.sh and commit):" >&2
    diff -r "$out/parley/v1" "$target" | head -40 >&2 || true
    exit 1
  fi
  echo "python generated code is up to date"
else
  rm -rf "$target"
  mkdir -p "$target"
  cp "$out"/parley/v1/* "$target/"
  echo "generated $(ls "$target" | wc -l) files into ${target#$root/}"
fi
