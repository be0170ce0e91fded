"""Send N requests through the proxy and print which backend answered how often."""

from __future__ import annotations

import argparse
import collections
import http.client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="shop.localhost", help="Host header")
    parser.add_argument("-n", type=int, default=1000)
    arguments = parser.parse_args()
    counts: collections.Counter[str] = collections.Counter()
    connection = http.client.HTTPConnection(arguments.url_host, arguments.port, timeout=5)
    for _ in range(arguments.n):
        connection.request("GET", "/", headers={"Host": arguments.host})
        response = connection.getresponse()
        body = response.read().decode().strip()
        counts[body if response.status == 200 else f"HTTP {response.status}"] += 1
    for name, count in sorted(counts.items()):
        print(f"{name:>12} {count:6d}  {100 * count / arguments.n:5.1f} %")


if __name__ == "__main__":
    main()
