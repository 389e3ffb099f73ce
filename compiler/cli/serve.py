"""`anychip serve [--tracker HOST:PORT] [--key KEY] [--host 127.0.0.1 --port 9090]`: make this
machine a device host of the farm (docs/farm.md)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve this machine's device to the farm (TVM RPC server)")
    p.add_argument("--tracker", metavar="HOST:PORT",
                   help="register with this TVM RPC tracker (omit: clients connect directly "
                        "with --remote)")
    p.add_argument("--key", help="device key clients ask for (default: the profile that "
                                 "executes here: 'cpu' on a plain host)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; others need --allow-remote)")
    p.add_argument("--port", type=int, default=9090, help="port (0: any free port)")
    p.add_argument("--port-end", type=int, help="search ports up to this one if --port is taken")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host (TVM RPC has no authentication)")
    p.add_argument("--advertise", metavar="HOST",
                   help="address the tracker tells clients to use (e.g. behind a tunnel)")
    p.add_argument("--job-timeout", type=float, default=600.0, metavar="S",
                   help="seconds a job may run before it is killed (default 600)")
    p.add_argument("--memory-gb", type=float, default=16.0,
                   help="address-space limit of each job in GiB (0: none; default 16)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..farm.address import parse_address
    from ..farm.serve import serve

    tracker = parse_address(args.tracker, "--tracker") if args.tracker else None
    serve(args.host, args.port, args.key, tracker, allow_remote=args.allow_remote,
          advertise=args.advertise, timeout_s=args.job_timeout, memory_gb=args.memory_gb,
          port_end=args.port_end, out=lambda line: print(line, flush=True))
    return 0
