"""The lab's "internet" servers, run inside the {prefix}-net namespace by tests/src/lab.rs.

On every address given with --addr: an HTTP/1.1 file server on --http-port serving --www, and
a UDP echo server on --udp-port (each datagram is sent back unchanged to its sender). Each
server binds its own address rather than the wildcard, so UDP replies leave from the address
the client sent to. Writes --ready once every socket is bound, then serves until killed.
"""

import argparse
import functools
import http.server
import os
import socket
import sys
import threading


class Handler(http.server.SimpleHTTPRequestHandler):
    # 1.1 keeps connections open between requests, as real clients expect; every response
    # of SimpleHTTPRequestHandler carries Content-Length, which 1.1 keep-alive needs.
    protocol_version = "HTTP/1.1"


def http_server(addr, port, www):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family})
    server = server_class((addr, port), functools.partial(Handler, directory=www))
    threading.Thread(target=server.serve_forever, daemon=True).start()


def udp_echo(addr, port):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((addr, port))

    def serve():
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(data, peer)

    threading.Thread(target=serve, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--www", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--addr", action="append", required=True)
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--udp-port", type=int, default=9000)
    args = parser.parse_args()
    for addr in args.addr:
        http_server(addr, args.http_port, args.www)
        udp_echo(addr, args.udp_port)
    tmp = args.ready + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, args.ready)
    print("serving", ", ".join(args.addr), file=sys.stderr, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
