# Sourced by scripts/serve and scripts/test: install the package into .venv only when .venv is
# missing, pyproject.toml changed since the last install or the checkout moved, so an offline
# host can restart the node. The stamp holds the hash of pyproject.toml and the extras installed
# with it, and on its second line the folder the venv was made in (a venv does not survive a
# move: its scripts name their interpreter by absolute path).

# ensure_venv [EXTRAS]: e.g. `ensure_venv test` installs ".[test]".
ensure_venv() {
  local extras="${1:-}" stamp=.venv/.dicomnode-installed want have made_in
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  have="$(head -n 1 "$stamp" 2>/dev/null || true)"
  made_in="$(sed -n 2p "$stamp" 2>/dev/null || true)"
  # The physical folder: a checkout reached through a symbolic link has not moved.
  if [ -d .venv ] && [ -n "$made_in" ] && [ "$made_in" != "$(pwd -P)" ]; then
    echo "the checkout moved from $made_in: making .venv anew" >&2
    rm -rf .venv
  fi
  # Up to date: same pyproject.toml, and the extras asked for were installed with it.
  if [ -x .venv/bin/dicomnode ] && [ "${have%% *}" = "$want" ] \
    && { [ -z "$extras" ] || [[ " ${have#* } " == *" $extras "* ]]; }; then
    return 0
  fi
  echo "installing dicomnode${extras:+[$extras]} into .venv (the first time: a few minutes)" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".${extras:+[$extras]}"
  printf '%s %s\n%s\n' "$want" "${extras:-none}" "$(pwd -P)" > "$stamp"
}
