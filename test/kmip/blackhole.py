#!/usr/bin/python3
"""A TCP listener that accepts connections and never answers (a hung KMS).

  blackhole.py PORT [PIDFILE]

Listens on 127.0.0.1:PORT, accepts every connection, reads and discards what
arrives and never sends a byte, so a client's TLS handshake waits until its
own timeout, cancel or termination. Writes its pid to PIDFILE once listening.
Runs until killed (SIGTERM/SIGINT).
"""
import os
import selectors
import signal
import socket
import sys


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write(__doc__)
        return 2
    port = int(argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    if len(argv) == 3:
        with open(argv[2] + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(argv[2] + ".tmp", argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in sel.select():
                if key.fileobj is listener:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                else:
                    try:
                        data = key.fileobj.recv(65536)
                    except (BlockingIOError, ConnectionError):
                        data = b"x"
                    if not data:  # the client went away
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
