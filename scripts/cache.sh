# Sourced by the build scripts of programs the suite runs but never imports
# (the collector, Jaeger): each build takes minutes, so its binary is cached
# outside the work tree, keyed by the files that pin its version, and built
# by one caller at a time.
#
#   cached NAME FILE...   sets $bin to the cached binary's path; returns 0 if
#                         it is there, else takes NAME's lock, and returns 1
#                         when the caller must build $bin itself.

cache=${ORDERTRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ordertrace}

cached() {
	local name=$1
	shift
	local key
	key=$(cat "$@" | sha256sum | cut -c1-12)
	bin=$cache/$name-$key/$name
	[ -x "$bin" ] && return 0
	mkdir -p "$cache"
	# Two test packages may ask at once: one builds, the other waits for it.
	exec 9>"$cache/$name.lock"
	flock 9
	[ -x "$bin" ]
}
