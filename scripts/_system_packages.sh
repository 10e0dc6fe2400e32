# Sourced by scripts/test: the Debian packages the cluster tests run (tests/cluster/),
# redis-server for the shared limits' tests (private instances on free ports), and
# promtool for the alert rules' tests (tests/deploy/), installed once, quietly, only when
# missing. Needs root and a reachable Debian mirror, as on CI; anywhere else, install them
# yourself: apt-get install haproxy pgbouncer redis-server prometheus.
_loopwise_missing=()
[ -x /usr/sbin/haproxy ] || _loopwise_missing+=(haproxy)
[ -x /usr/sbin/pgbouncer ] || _loopwise_missing+=(pgbouncer)
[ -x /usr/bin/redis-server ] || _loopwise_missing+=(redis-server)
# promtool ships in the server's package (19 MB; measured 29 s with apt-get update here);
# the server itself is never started (policy-rc.d below).
[ -x /usr/bin/promtool ] || _loopwise_missing+=(prometheus)
if [ "${#_loopwise_missing[@]}" -gt 0 ]; then
  echo "loopwise: installing ${_loopwise_missing[*]} for the tests (once)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run on the machine holds the lock for a while: wait for it, not fail.
  _loopwise_apt=(apt-get -qq -o DPkg::Lock::Timeout=600)
  "${_loopwise_apt[@]}" update >/dev/null
  # The packages' own services are not wanted (the tests start private instances on free
  # ports; the default ones would take fixed ports): policy-rc.d refuses to start them.
  _loopwise_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    _loopwise_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$_loopwise_policy" && chmod +x "$_loopwise_policy"
  fi
  "${_loopwise_apt[@]}" install -y --no-install-recommends "${_loopwise_missing[@]}" >/dev/null
  [ -z "$_loopwise_policy" ] || rm -f "$_loopwise_policy"
fi
unset _loopwise_missing _loopwise_policy _loopwise_apt
