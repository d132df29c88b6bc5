#!/usr/bin/env bash
# Checks the bash completion against the keel binary it completes: every command `keel --help` lists is
# offered, and for each command exactly the options its `keel help COMMAND` names (put's for `schedule put`).
# Usage: check_completion.sh COMPLETION_FILE KEEL_BINARY
set -euo pipefail
# shellcheck source=/dev/null
source "$1"
keel=$2
fail() {
  echo "completion: $*" >&2
  exit 1
}
# Completes the last word of a keel command line, as bash would: prints the candidates, sorted, one a line.
complete_line() {
  COMP_WORDS=(keel "$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _keel
  printf '%s\n' "${COMPREPLY[@]}" | sort -u
}

general_help=$("$keel" --help)
commands=$(sed -n '/^Commands:/,/^$/p' <<<"$general_help" | grep -oE '^  [a-z]+' | tr -d ' ' | sort -u)
[ -n "$commands" ] || fail "no commands in keel --help"
[ "$(complete_line "")" = "$commands" ] || fail "commands: offered $(complete_line "" | xargs), keel has $(xargs <<<"$commands")"

for c in $commands; do
  [ "$c" = help ] && continue
  help=$("$keel" help "$c")
  documented=$(grep -oE -- '--[a-z][a-z-]*' <<<"$help" | sort -u)
  if [ "$c" = schedule ]; then
    offered=$(complete_line schedule put name --)
  else
    offered=$(complete_line "$c" --)
  fi
  [ "$offered" = "$documented" ] ||
    fail "$c: offered $(xargs <<<"$offered"), keel help $c names $(xargs <<<"$documented")"
done

list_help=$("$keel" help list)
for s in $(complete_line list --status ""); do
  grep -qw -- "$s" <<<"$list_help" || fail "list --status offers $s, which keel help list does not name"
done
[ "$(complete_line schedule "" | xargs)" = "delete pause put resume show" ] || fail "schedule's subcommands"
[ "$(complete_line list --status = fa)" = failed ] || fail "list --status=fa"
echo "completion: $(wc -w <<<"$commands") commands and their options, as keel documents them"
