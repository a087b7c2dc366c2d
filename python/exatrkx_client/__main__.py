"""`python -m exatrkx_client --url HOST:PORT --events DIR --out DIR`: track finding on a
Triton server for every TrackML event in DIR; labels written as event%09d-labels.csv."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exatrkx_client import MODEL, OUTPUTS, run_events, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exatrkx_client", description=__doc__)
    parser.add_argument("--url", required=True, help="server HOST:PORT (gRPC or HTTP port)")
    parser.add_argument("--events", type=Path, required=True, help="folder of TrackML events")
    parser.add_argument("--out", type=Path, required=True, help="folder for the label files")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument(
        "--module-ids", action="store_true", help="also send MODULE_ID (module-map models)"
    )
    parser.add_argument(
        "--outputs",
        nargs="+",
        choices=OUTPUTS,
        default=["LABELS"],
        help="outputs to request; EDGE_INDEX/EDGE_SCORES -> -edges.csv, TRACKS -> -tracks.csv",
    )
    parser.add_argument("--event", type=int, action="append", help="only these event ids")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    results = run_events(
        args.url,
        args.events,
        args.out,
        protocol=args.protocol,
        model=args.model,
        send_module_ids=args.module_ids,
        outputs=args.outputs,
        events=args.event,
    )
    if not results:
        print(f"no events (event*-hits.csv[.gz]) in {args.events}", file=sys.stderr)
        return 1
    summary = summarize(results)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['events']} events, {summary['failed']} failed")
        if "latency_mean_s" in summary:
            ms = {k: summary[k] * 1e3 for k in summary if k.startswith("latency_")}
            print(
                f"latency mean {ms['latency_mean_s']:.1f} ms, median {ms['latency_median_s']:.1f} "
                f"ms, p90 {ms['latency_p90_s']:.1f} ms, max {ms['latency_max_s']:.1f} ms; "
                f"{summary['events_per_s']:.2f} events/s one at a time; "
                f"{summary['spacepoints_mean']:.0f} spacepoints, {summary['tracks_mean']:.0f} "
                "tracks per event"
            )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
