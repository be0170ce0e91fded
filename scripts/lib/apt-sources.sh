# Shared shell functions for the scripts that make Debian images: sourced, never run.
#
# WHY: an image made here must fetch its packages the way this machine does, from this
# machine's own apt sources, so that no mirror host name is written in the repository.

# The first URI of this machine's apt sources for the Debian archive ("main") or for its
# security archive ("security"), from deb822 debian.sources or one-line sources.list.
host_apt_uri() {
    local kind=$1 deb822=/etc/apt/sources.list.d/debian.sources oneline=/etc/apt/sources.list
    if [[ -f $deb822 ]]; then
        awk -v kind="$kind" '
            function flush() {
                if (!done && uri != "" && deb && !disabled && security == (kind == "security")) {
                    print uri; done = 1
                }
                uri = ""; deb = 0; security = 0; disabled = 0
            }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i ~ /-security$/) security = 1 }
            tolower($1) == "enabled:" && tolower($2) == "no" { disabled = 1 }
            END { flush() }
        ' "$deb822"
    elif [[ -f $oneline ]]; then
        awk -v kind="$kind" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if (($(i + 1) ~ /-security$/) == (kind == "security")) { print $i; exit }
            }
        ' "$oneline"
    fi
}

# Give a debootstrapped ROOT the apt sources of a stock Debian 12 image: no sources.list, only
# deb822 debian.sources (bookworm, bookworm-updates, bookworm-security) from the URIs given.
write_debian_sources() {
    local root=$1 main=$2 security=$3
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $main
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
}
