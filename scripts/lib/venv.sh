# Sourced by scripts/serve and scripts/test: install the package into .venv only when .venv is
# missing or pyproject.toml changed since the last install, so an offline host can restart the
# node. The stamp holds the hash of pyproject.toml and the extras installed with it.

# ensure_venv [EXTRAS]: e.g. `ensure_venv test` installs ".[test]".
ensure_venv() {
  local extras="${1:-}" stamp=.venv/.dicomnode-installed want have
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  have="$(cat "$stamp" 2>/dev/null || true)"
  # Up to date: same pyproject.toml, and the extras asked for were installed with it.
  if [ -x .venv/bin/dicomnode ] && [ "${have%% *}" = "$want" ] \
    && { [ -z "$extras" ] || [[ " ${have#* } " == *" $extras "* ]]; }; then
    return 0
  fi
  echo "installing dicomnode${extras:+[$extras]} into .venv (the first time: a few minutes)" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".${extras:+[$extras]}"
  echo "$want ${extras:-none}" > "$stamp"
}
