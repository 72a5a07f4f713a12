"""Serve a synthetic fleet until Ctrl-C:  python -m simulator --devices 50 --port 8080

Then, from another terminal in the repository (the simulator speaks plain http on 127.0.0.1):
    KANDJI_API_TOKEN=simulator-example-token-0123456789 .venv/bin/kandji-snapshots check \
        --url http://127.0.0.1:8080 --allow-insecure-localhost
"""
from __future__ import annotations

import argparse
import threading

from . import Fleet, KandjiSimulator
from .server import HEADER_ERAS, PRISM_PAGE_ROWS

EXAMPLE_TOKEN = "simulator-example-token-0123456789"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    # Long and unlike any word: the CLI redacts the token wherever it appears in its output, and a short
    # one ("token") would be cut out of the messages themselves.
    parser.add_argument("--token", default=EXAMPLE_TOKEN, help=f"the token to accept (default {EXAMPLE_TOKEN})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--apps", type=int, nargs=2, metavar=("MIN", "MAX"), default=(20, 40),
                        help="apps per Mac (default 20 40)")
    parser.add_argument("--rate-limit-per-second", type=int, default=None)
    parser.add_argument("--rate-limit-per-hour", type=int, default=10000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--headers-era", choices=HEADER_ERAS, default="2024",
                        help="response headers as recorded in that year (2022/2023: no rate-limit headers)")
    parser.add_argument("--prism-page-rows", type=int, default=PRISM_PAGE_ROWS,
                        help=f"rows per Prism page at most, whatever the limit (default {PRISM_PAGE_ROWS})")
    parser.add_argument("--prism-cursors", action="store_true", help="hand out Prism cursors (default: null)")
    args = parser.parse_args(argv)

    fleet = Fleet.generate(args.devices, seed=args.seed, apps_per_device=tuple(args.apps))
    sim = KandjiSimulator(fleet, token=args.token, host=args.host, port=args.port,
                          rate_limit_per_second=args.rate_limit_per_second,
                          rate_limit_per_hour=args.rate_limit_per_hour, latency=args.latency,
                          headers_era=args.headers_era, prism_page_rows=args.prism_page_rows,
                          prism_cursors=args.prism_cursors)
    with sim:
        print(f"Kandji simulator: {len(fleet)} devices at {sim.api_url} (token {args.token}); Ctrl-C to stop\n"
              f"  KANDJI_API_TOKEN={args.token} .venv/bin/kandji-snapshots check --url {sim.base_url} "
              "--allow-insecure-localhost", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
